"""The HTTP endpoint: /metrics, the probes and the web page, served from its own thread."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge_facedet.outputs.http import MetricsServer
from edge_facedet.outputs.httpauth import HttpAuth

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from edge_facedet.config import MetricsConfig
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.web import WebOutput

__all__ = ["start_endpoint"]

log = logging.getLogger(__name__)


def start_endpoint(
    settings: MetricsConfig,
    *,
    metrics: Metrics,
    health: Callable[[], tuple[bool, dict[str, object]]],
    live: Callable[[], bool],
    web: WebOutput | None,
    environ: Mapping[str, str],
    credentials_dir: Path | None,
) -> MetricsServer:
    """The endpoint for `settings`, started; `health` answers /healthz, `live` /livez."""
    server = MetricsServer(
        host=settings.host,
        port=settings.port,
        registry=metrics.registry,
        health=health,
        live=live,
        events=metrics.http,
        web=web,
        auth=None
        if settings.auth is None
        else HttpAuth.from_config(settings.auth, environ=environ, credentials_dir=credentials_dir),
    )
    server.start()
    log.info("metrics on http://%s:%d/metrics", settings.host, server.port)
    return server
