"""The running configuration, this shard's view of the file, and its reloads (SIGHUP)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from edge_facedet.config.diff import diff_configs
from edge_facedet.config.shard import config_for_shard
from edge_facedet.reload import OK, Reloader, ReloadReport, file_sha256
from edge_facedet.sharding import camera_loads, plan_shard

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig, ServiceConfig
    from edge_facedet.config.diff import ConfigDiff
    from edge_facedet.config.shard import Shard
    from edge_facedet.outputs.base import Output
    from edge_facedet.outputs.build import OutputContext
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.runtime.cameras import CameraRuntime
    from edge_facedet.runtime.outputset import OutputSet, Spawn
    from edge_facedet.sharding import ShardPlan
    from edge_facedet.systemd import SystemdNotifier

__all__ = ["LiveConfig"]

log = logging.getLogger(__name__)


class LiveConfig:
    """The target of its `reloader` (reload.py's `ReloadTarget`): a reload starts, stops or
    restarts the cameras that changed and swaps the MQTT output for one with the new
    settings; what needs a restart keeps its running value.

    `path`: the file `config` was loaded from; SIGHUP reloads it (without one, there is no
    reloader and SIGHUP is ignored).
    """

    def __init__(
        self,
        *,
        config: ServiceConfig,
        shard: Shard,
        outputs: OutputSet,
        path: Path | None,
        metrics: Metrics,
        notifier: SystemdNotifier,
        environ: Mapping[str, str],
    ) -> None:
        self.shard = shard
        # A shard is its own node (node id, client id, topics); it runs the cameras the
        # assignment gives its index, computed from every enabled camera of the file.
        self.config = config_for_shard(config, shard=shard)
        self.plan = self._plan(self.config)
        self._outputs = outputs
        self.cameras: CameraRuntime | None = None
        """Set once the detector runs; None while starting and on a shard without cameras."""
        self.reloader: Reloader | None = None
        self._reload_task: asyncio.Task[None] | None = None
        if path is not None:
            self.reloader = Reloader(
                path=path,
                target=self,
                metrics=metrics,
                notifier=notifier,
                environ=environ,
                running_sha256=file_sha256(path),
            )

    def enabled_cameras(self) -> list[CameraConfig]:
        """The enabled cameras of the running configuration that this shard runs."""
        return _cameras_of(self.config, self.plan)

    def flow_window_s(self) -> float:
        """How long frames may stop reaching the detector before the pipeline counts as
        wedged (/healthz, /livez, the systemd watchdog)."""
        cameras = self.enabled_cameras()
        slowest = min((camera.detect_fps for camera in cameras), default=1.0)
        # A still scene sends frames only at its motion gate's rechecks.
        rechecks = [c.motion.recheck_interval_s for c in cameras if c.motion.enabled]
        return max(10.0, 5.0 / slowest, 3.0 * min(rechecks, default=0.0))

    def _plan(self, config: ServiceConfig) -> ShardPlan:
        return plan_shard(
            camera_loads(config.cameras), index=self.shard.index, count=self.shard.count
        )

    def _owned(self, config: ServiceConfig) -> list[CameraConfig]:
        """The enabled cameras of `config` this shard runs (index and count stay: `shard:`
        changes apply at the next start)."""
        return _cameras_of(config, self._plan(config))

    def report_shard(self, metrics: Metrics) -> None:
        plan = self.plan
        metrics.shard.info({"index": str(plan.index), "count": str(plan.count)})
        metrics.shard_cameras.set(len(plan.cameras))
        metrics.shard_cost.set(plan.cost)
        if self.shard.sharded:
            log.info("node %s is %s", self.config.node_id, plan.summary())

    def build_outputs(
        self, *, context: OutputContext, cameras: Sequence[CameraConfig]
    ) -> list[Output]:
        """The outputs announcing `cameras`, with the node's retained messages set."""
        outputs = self._outputs.build(self.config, context=context, cameras=cameras)
        self._retain_shard()
        if self.reloader is not None:
            running = self.reloader.running_sha256
            self.publish_config_report(
                ReloadReport(result=OK, sha256=running, running_sha256=running)
            )
        return outputs

    def _retain_shard(self) -> None:
        """The node's retained messages besides the cameras' (the shard's assignment)."""
        if self.shard.sharded:
            self._outputs.retain_shard(self.plan, qos=self.config.mqtt.qos.status)

    # -- reloads ---------------------------------------------------------------------------

    def request_reload(self) -> None:
        """The SIGHUP handler; returns at once."""
        if self.reloader is None:
            log.warning("SIGHUP ignored: the service was not started from a file")
            return
        self.reloader.request()

    def start_reloader(self, spawn: Spawn) -> None:
        """Serve reload requests from now on, as a task of the service's group."""
        if self.reloader is not None:
            self._reload_task = spawn(self.reloader.run(), name="reload")

    async def stop_reloader(self) -> None:
        """Cancel the reloader and wait for it: a reload half-way through a camera's restart
        must not start a reader after the readers are stopped."""
        if self._reload_task is not None:
            self._reload_task.cancel()
            await asyncio.wait((self._reload_task,))

    def diff(self, new: ServiceConfig) -> ConfigDiff:
        diff = diff_configs(
            self.config, config_for_shard(new, shard=self.shard), cameras=self._owned
        )
        if self.cameras is None and diff.cameras_touched:
            # Running without a detector (a shard that owned no camera): cameras need one.
            touched = sorted(diff.cameras_touched)
            return dataclasses.replace(
                diff,
                added=(),
                removed=(),
                changed=(),
                restart_required=(*diff.restart_required, *(f"cameras.{c}" for c in touched)),
            )
        return diff

    async def apply(self, new: ServiceConfig, diff: ConfigDiff) -> None:
        """Apply the cameras and MQTT of `new`; what needs a restart keeps its old value."""
        new = config_for_shard(new, shard=self.shard)
        cameras = self.cameras
        live = {"cameras": new.cameras, "defaults": new.defaults, "mqtt": new.mqtt}
        if cameras is None:
            live = {"mqtt": new.mqtt}
        if cameras is not None and diff.cameras_touched:
            owned = {camera.id: camera for camera in self._owned(new)}
            await cameras.change(diff, owned=owned, outputs=self._outputs.outputs)
        # Restart-only sections keep their running values, so the next diff still names them.
        self.config = self.config.model_copy(update=live)
        self.plan = self._plan(self.config)
        if diff.mqtt:
            await self._outputs.replace_mqtt(
                self.config,
                cameras=self.enabled_cameras(),
                pipeline=None if cameras is None else cameras.pipeline,
            )
        self._retain_shard()

    def publish_config_report(self, report: ReloadReport) -> None:
        self._outputs.retain_config_report(
            report.payload(), qos=max(self.config.mqtt.qos.status, 1)
        )


def _cameras_of(config: ServiceConfig, plan: ShardPlan) -> list[CameraConfig]:
    owned = set(plan.cameras)
    return [camera for camera in config.cameras if camera.id in owned]
