"""The `edge-facedet check-config FILE` report: the problems, or a summary of what runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from edge_facedet.config import ConfigError, display_detect_url, display_url, load_config
from edge_facedet.config.unit_sandbox import hidden_camera_files

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

__all__ = ["check_config"]

EXIT_OK, EXIT_USAGE = 0, 2


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_config(
    path: Path, *, out: TextIO, err: TextIO, credentials_dir: Path | None = None
) -> int:
    """`edge-facedet check-config FILE`: 0 and a summary if valid, else 2 and the problems.

    `credentials_dir` replaces `$CREDENTIALS_DIRECTORY`, which only the unit sets.
    """
    environ = dict(os.environ)
    if credentials_dir is not None:
        environ["CREDENTIALS_DIRECTORY"] = str(credentials_dir)
    try:
        config = load_config(path, environ=environ)
    except ConfigError as exc:
        err.write(f"{exc}\n")
        return EXIT_USAGE
    for warning in hidden_camera_files(config):
        err.write(f"{path}: {warning}\n")
    enabled = [camera for camera in config.cameras if camera.enabled]
    out.write(f"{path}: OK\n")
    out.write(f"node: {config.node_id}\n")
    out.write(f"cameras: {len(enabled)} enabled, {len(config.cameras) - len(enabled)} disabled\n")
    for camera in config.cameras:
        state = "" if camera.enabled else " (disabled)"
        detect = f" detect_url={display_detect_url(camera)}" if camera.detect_url else ""
        out.write(
            f"  {camera.id}: {display_url(camera)}{detect} "
            f"detect_fps={camera.detect_fps:g}{state}\n"
        )
    model = config.model
    where = model.path or model.dir or "default models dir"
    out.write(f"model: {model.precision} on {model.device} ({where})\n")
    mqtt = config.mqtt
    user = f", user {mqtt.username}" if mqtt.username else ""
    tls = "yes" if mqtt.tls.enabled else "no"
    out.write(f"mqtt: {_host_port(mqtt.host, mqtt.effective_port)}, TLS {tls}{user}\n")
    metrics = config.metrics
    if metrics.enabled:
        out.write(f"metrics: http://{_host_port(metrics.host, metrics.port)}/metrics\n")
    else:
        out.write("metrics: disabled\n")
    return EXIT_OK
