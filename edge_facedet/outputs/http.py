"""The HTTP endpoint: Prometheus `/metrics` and `/healthz`, served from a thread of its own.

A thread keeps scrapes off the event loop (rendering hundreds of series is CPU work) and
keeps metrics answering even if the loop were wedged, which is when they matter most. The
server itself (httpserver.py) bounds connections, request sizes and time; this module is
only the routes.
"""

from __future__ import annotations

import gzip
import json
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted

from edge_facedet.outputs.httpmessages import Request, Response
from edge_facedet.outputs.httpserver import HttpEvents, HttpLimits, HttpServer

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

METRICS_PATHS = ("/", "/metrics")
HEALTH_PATHS = ("/healthz", "/health")
NOT_FOUND = Response(status=HTTPStatus.NOT_FOUND, body=b"not found: try /metrics or /healthz\n")


class MetricsServer:
    """Serves `/metrics` (Prometheus text format) and `/healthz` (200 healthy, 503 not)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        limits: HttpLimits | None = None,
        events: HttpEvents | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        routes = {
            **dict.fromkeys(METRICS_PATHS, self._metrics),
            **dict.fromkeys(HEALTH_PATHS, self._healthz),
        }
        self._server = HttpServer(
            host=host,
            port=port,
            routes=routes,
            not_found=NOT_FOUND,
            limits=limits,
            events=events,
            thread_name="metrics-http",
        )

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _metrics(self, request: Request) -> Response:
        # What prometheus_client's own WSGI app does: the format the scraper accepts
        # (text 0.0.4 or OpenMetrics), `name[]` to select series, gzip when asked for.
        encoder, content_type = choose_encoder(request.header("accept"))
        registry: Any = self._registry
        names = parse_qs(request.query).get("name[]")
        if names:
            registry = registry.restricted_registry(names)
        body = encoder(registry)
        headers: tuple[tuple[str, str], ...] = ()
        if gzip_accepted(request.header("accept-encoding")):
            body = gzip.compress(body)
            headers = (("Content-Encoding", "gzip"),)
        return Response(status=HTTPStatus.OK, body=body, content_type=content_type, headers=headers)

    def _healthz(self, request: Request) -> Response:
        healthy, detail = self._health()
        body = json.dumps({"healthy": healthy, **detail}, separators=(",", ":")).encode()
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(status=status, body=body, content_type="application/json")
