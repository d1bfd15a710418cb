"""What `run` checks before it starts the service: settings that validate but cannot work here.

A missing model, a metrics address that is not this host's or a snapshot directory that
cannot be written is a configuration problem:
reported with its field and exit 2 before the service starts, instead of a failure later
(OpenVINO, the bind) with exit 1, no hint which setting is wrong, and systemd restarting a
configuration that cannot work. Debug variables that make OpenCV/FFmpeg print passwords get
one warning.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from edge_facedet.redact import debug_variables

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edge_facedet.config import ServiceConfig

log = logging.getLogger(__name__)


def start_problem(config: ServiceConfig) -> str | None:
    """The first reason (`<field>: <problem>`) the service cannot start, or None."""
    return metrics_host_problem(config) or snapshot_dir_problem(config) or model_problem(config)


def snapshot_dir_problem(config: ServiceConfig) -> str | None:
    """Why snapshot files cannot be written to `snapshot_dir.path`, or None."""
    if config.snapshot_dir is None:
        return None
    from edge_facedet.outputs.snapshots.store import (  # noqa: PLC0415 - only `run` needs it
        SnapshotDirError,
        SnapshotStore,
    )

    try:
        SnapshotStore(config=config.snapshot_dir).check()
    except SnapshotDirError as exc:
        return str(exc)
    return None


def model_problem(config: ServiceConfig) -> str | None:
    """Why the configured model cannot be loaded (naming the field), or None if it can."""
    # Imported here: the asset tools pull in urllib's HTTP client, which `run` alone needs.
    from edge_facedet.tools.assets import (  # noqa: PLC0415
        AssetError,
        default_model_root,
        verify_model,
    )

    model = config.model
    if model.path is not None:
        # An explicit IR may be any model: only its files' presence can be checked.
        missing = [p for p in (model.path, model.path.with_suffix(".bin")) if not p.is_file()]
        if missing:
            return f"model.path: model file {missing[0]} does not exist"
        return None
    field = "model.dir" if model.dir is not None else "model.dir (default models root)"
    try:
        verify_model(root=model.dir or default_model_root(), precision=model.precision)
    except AssetError as exc:
        return f"{field}: {exc}"
    return None


def metrics_host_problem(config: ServiceConfig) -> str | None:
    """Why the metrics endpoint cannot listen on its configured host, or None.

    Binds port 0 on the address: resolves the name and proves the address is this host's,
    without taking the configured port (a port in use stays a runtime failure, exit 1).
    `check-config` does not do this: a config is often checked on another machine.
    """
    metrics = config.metrics
    if not metrics.enabled:
        return None
    try:
        infos = socket.getaddrinfo(
            metrics.host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except (OSError, IndexError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return f"metrics.host: cannot listen on {metrics.host!r}: {reason}"
    return None


def warn_debug_variables(environ: Mapping[str, str]) -> None:
    """One warning line if OpenCV/FFmpeg debug output, which no formatter sees, is on."""
    found = debug_variables(environ)
    if found:
        log.warning(
            "%s set: OpenCV/FFmpeg debug output goes to stderr unredacted and can show camera "
            "URLs with their passwords; unset it outside debugging",
            ", ".join(found),
        )
