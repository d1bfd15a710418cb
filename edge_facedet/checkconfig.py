"""The `edge-facedet check-config FILE` report: the problems, or a summary of what runs.

With `--against RUNNING_FILE` it also prints what a reload of a service running that file
would change (config/diff.py), so an operator can look before `systemctl reload`.

With shards (`--shard I/N`, or a file or `$EDGE_FACEDET_SHARD` that shards), it also shows
the assignment: which cameras each shard runs and what they cost, as every replica computes
it, so an operator sees imbalance before deploying.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from edge_facedet.config import ConfigError, display_detect_url, display_url, load_config
from edge_facedet.config.diff import diff_configs
from edge_facedet.config.shard import Shard, shard_node_id, shard_settings
from edge_facedet.config.unit_sandbox import hidden_camera_files
from edge_facedet.sharding import assign, camera_loads, shard_loads

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

    from edge_facedet.config import ServiceConfig

__all__ = ["check_config"]

EXIT_OK, EXIT_USAGE = 0, 2


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_config(
    path: Path,
    *,
    out: TextIO,
    err: TextIO,
    credentials_dir: Path | None = None,
    shard: Shard | None = None,
    against: Path | None = None,
) -> int:
    """`edge-facedet check-config FILE`: 0 and a summary if valid, else 2 and the problems.

    `credentials_dir` replaces `$CREDENTIALS_DIRECTORY`, which only the unit sets. `shard`
    (`--shard I/N`) lists what that shard runs; without it, a sharded file gets the table.
    `against`: the file the running service loaded; the reload's changes are printed too
    (exit 2 if that file does not load either: there is nothing to compare with).
    """
    environ = dict(os.environ)
    if credentials_dir is not None:
        environ["CREDENTIALS_DIRECTORY"] = str(credentials_dir)
    try:
        config = load_config(path, environ=environ)
        shard_lines = _shard_report(config, shard=shard, environ=environ)
        running = None if against is None else load_config(against, environ=environ)
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
    out.writelines(f"{line}\n" for line in shard_lines)
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
    if running is not None:
        out.write(f"reload against {against}:\n")
        out.writelines(f"  {line}\n" for line in diff_configs(running, config).lines())
    return EXIT_OK


def _shard_report(
    config: ServiceConfig, *, shard: Shard | None, environ: dict[str, str]
) -> list[str]:
    """The assignment's lines: shard `shard`'s cameras, or with no `--shard` every shard's
    (when the file or the environment shards); each shard's node id and cost. ConfigError
    for a node id pattern that makes no node id."""
    settings = shard_settings(config.shard, environ=environ)
    count = shard.count if shard is not None else settings.count
    if count == 1:
        return []
    loads = camera_loads(config.cameras)
    table = assign(loads, count=count)
    costs = shard_loads(loads, table)
    mean = math.fsum(costs.values()) / count
    worst = max(costs.values()) / mean if mean else 1.0
    total = math.fsum(costs.values())
    lines = [
        (
            f"shards: {count}, cost {total:.2f} in all, {mean:.2f} per shard on average, "
            f"the most loaded x{worst:.2f}"
        )
    ]
    cost_of = {camera.id: camera.cost for camera in loads}
    for index in range(count):
        node_id = shard_node_id(
            node_id=config.node_id,
            shard=Shard(index=index, count=count),
            pattern=config.shard.node_id_pattern,
        )
        cameras = table[index]
        line = f"  shard {index} (node {node_id}): {len(cameras)} cameras, cost {costs[index]:.2f}"
        if shard is None or shard.index == index:
            line += ": " + (", ".join(f"{c} ({cost_of[c]:.2f})" for c in cameras) or "none")
        lines.append(line)
    return lines
