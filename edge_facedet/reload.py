"""A configuration reload (SIGHUP, `systemctl reload`): read, validate, apply, report.

The file is read and validated exactly as `run` reads it (`load_config`: YAML, every field,
every secret and TLS file), plus the start checks that apply to a running service (the
model files, the metrics address, the snapshot directory: a field that applies at the next
start must not make that start fail). A file that fails any of them is refused whole: the
service runs on with the configuration it has. A valid one is compared with the running one
(config/diff.py) and the difference handed to the `ReloadTarget` (runtime/liveconfig.py), which
starts, stops or restarts the cameras that changed and reconnects MQTT with changed settings;
fields that cannot change in a running process are named and apply at the next start.

Every reload is reported three ways: a log line per problem, the counter
`edge_facedet_config_reloads_total{result}` and the retained `<prefix>/config` message
(`ReloadReport.payload`). systemd is told `RELOADING=1` at the start and `READY=1` at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from edge_facedet.config import ConfigError, load_config
from edge_facedet.config.files import TextFileError, read_text_file
from edge_facedet.config.loader import MAX_CONFIG_BYTES
from edge_facedet.preflight import start_problem

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from edge_facedet.config import ServiceConfig
    from edge_facedet.config.diff import ConfigDiff
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.systemd import SystemdNotifier

__all__ = ["ReloadReport", "ReloadTarget", "Reloader", "file_sha256", "validate_file"]

log = logging.getLogger(__name__)

OK, INVALID, FAILED = "ok", "invalid", "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadReport:
    """The outcome of loading the file (at start or at a reload): the `<prefix>/config`
    message's content."""

    result: str
    """ok, invalid (refused; the old configuration runs on) or failed (applying raised)."""
    sha256: str | None
    """Of the file read (also when it was refused); None if it could not be read."""
    running_sha256: str | None
    """Of the file the running configuration came from."""
    loaded_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    problems: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    """What was applied, in config/diff.py's words."""
    pending_restart: tuple[str, ...] = ()
    """Changed fields that apply at the next start."""

    def payload(self) -> bytes:
        body = {
            "loaded_at": self.loaded_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sha256": self.sha256,
            "running_sha256": self.running_sha256,
            "result": self.result,
            "problems": list(self.problems),
            "changes": list(self.changes),
            "pending_restart": list(self.pending_restart),
        }
        return json.dumps(body, separators=(",", ":")).encode()


class ReloadTarget(Protocol):
    """What a reload changes: the running service."""

    def diff(self, new: ServiceConfig) -> ConfigDiff:
        """What applying `new` would change (with this service's shard's cameras)."""
        ...

    async def apply(self, new: ServiceConfig, diff: ConfigDiff) -> None:
        """Apply the live part of `diff`; the rest is left for the next start."""
        ...

    def publish_config_report(self, report: ReloadReport) -> None:
        """Retain `report` as `<prefix>/config`."""
        ...


def file_sha256(path: Path) -> str | None:
    """The file's sha256 (hex), read as load_config reads it (bounded); None if unreadable."""
    try:
        text = read_text_file(path, limit=MAX_CONFIG_BYTES)
    except TextFileError:
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def validate_file(path: Path, *, environ: Mapping[str, str]) -> ServiceConfig:
    """The file as `run` would accept it, or ConfigError with every problem (blocking I/O)."""
    config = load_config(path, environ=environ)
    if not any(camera.enabled for camera in config.cameras):
        raise ConfigError(f"{path}: cameras: no camera is enabled; nothing to do")
    problem = start_problem(config)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    return config


class Reloader:
    """Runs reloads one at a time; requests during one coalesce into one more."""

    def __init__(
        self,
        *,
        path: Path,
        target: ReloadTarget,
        metrics: Metrics,
        notifier: SystemdNotifier,
        environ: Mapping[str, str] | None = None,
        running_sha256: str | None = None,
    ) -> None:
        self._path = path
        self._target = target
        self._metrics = metrics
        self._notifier = notifier
        self._environ = os.environ if environ is None else environ
        self.running_sha256 = running_sha256
        self._wanted = asyncio.Event()

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler); returns at once."""
        self._wanted.set()

    async def run(self) -> None:
        """Serve reload requests until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.reload()

    async def reload(self) -> ReloadReport:
        self._notifier.reloading("reloading the configuration")
        try:
            report = await self._reload()
        finally:
            # Also after a failure: systemd (253+) waits for it, and the service runs on.
            self._notifier.ready()
        self._metrics.config_reloads.labels(result=report.result).inc()
        self._target.publish_config_report(report)
        return report

    async def _reload(self) -> ReloadReport:
        log.info("reloading the configuration from %s", self._path)
        sha = await asyncio.to_thread(file_sha256, self._path)
        try:
            new = await asyncio.to_thread(validate_file, self._path, environ=self._environ)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)  # noqa: TRY400 - the cause is the text
            log.error("reload refused: the service runs on with the configuration it has")  # noqa: TRY400
            return ReloadReport(
                result=INVALID,
                sha256=sha,
                running_sha256=self.running_sha256,
                problems=tuple(exc.problems),
            )
        diff = self._target.diff(new)
        for path in diff.restart_required:
            log.warning("reload: %s changed: cannot change live, applies at the next start", path)
        try:
            await self._target.apply(new, diff)
        except Exception as exc:
            log.exception("reload: applying the configuration failed")
            return ReloadReport(
                result=FAILED,
                sha256=sha,
                running_sha256=self.running_sha256,
                problems=(f"{type(exc).__name__}: applying failed; see the log",),
            )
        self.running_sha256 = sha
        applied = tuple(line for line in diff.lines() if "next start" not in line)
        log.info("reload applied: %s", "; ".join(applied) or "nothing to change live")
        return ReloadReport(
            result=OK,
            sha256=sha,
            running_sha256=sha,
            changes=applied,
            pending_restart=diff.restart_required,
        )
