"""The running service: wiring, start order, one top-level TaskGroup, signals, stop order.

Start: metrics endpoint -> snapshot directory checked -> model compiled (worker thread) ->
outputs started (the MQTT connection attempted) -> snapshot worker -> cameras -> scheduler ->
READY=1. Stop (SIGTERM/SIGINT): STOPPING=1 -> reloads and the track expiry stopped -> cameras
told to stop -> in-flight inference finishes -> every open track ends (`end`, reason
shutdown) -> queued snapshots rendered -> outputs closed (`stopped` published) -> the group is
cancelled -> exit 0. The outputs are a list (outputs/build.py makes it from the config); the
result pipeline fans out to every one.
Reload (SIGHUP): reload.py reads and validates the file; runtime/liveconfig.py's `apply`
starts, stops or restarts only the cameras that changed and swaps the MQTT output for one
with new settings. The parts live in runtime/; this module only orders them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_facedet import __version__
from edge_facedet._compat import TaskGroup
from edge_facedet.config.shard import Shard, resolve_shard
from edge_facedet.outputs.build import OutputContext, build_web_output
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.payloads import new_run_id
from edge_facedet.outputs.pipeline import ResultPipeline
from edge_facedet.runtime.cameras import CameraRuntime
from edge_facedet.runtime.detector import (
    ModelLoadError,
    load_detector,
    model_cache_dir,
    report_device,
    resolve_model_xml,
)
from edge_facedet.runtime.endpoint import start_endpoint
from edge_facedet.runtime.liveconfig import LiveConfig
from edge_facedet.runtime.outputset import OutputSet
from edge_facedet.runtime.periodic import expire_tracks, feed_watchdog, report_to_systemd
from edge_facedet.runtime.signals import install_signal_handlers, remove_signal_handlers
from edge_facedet.runtime.snapshots import open_snapshot_store, start_snapshots
from edge_facedet.systemd import SystemdNotifier

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping, Sequence

    from edge_facedet._compat import TaskGroup as TaskGroupType
    from edge_facedet.config import CameraConfig, ServiceConfig
    from edge_facedet.inference.detector import OpenVinoDetector
    from edge_facedet.outputs.base import Output
    from edge_facedet.outputs.http import MetricsServer
    from edge_facedet.outputs.snapshots.mainwiring import MainStreamSet
    from edge_facedet.outputs.snapshots.worker import SnapshotResult, SnapshotWorker
    from edge_facedet.outputs.web import WebOutput

# ModelLoadError and load_detector live in runtime/detector.py; the CLI and the benchmarks
# import them from here.
__all__ = ["ModelLoadError", "Service", "load_detector"]

log = logging.getLogger(__name__)

# Snapshots queued at a stop get this long to be rendered and handed to the outputs.
SNAPSHOT_DRAIN_S = 2.0


class Service:
    """One configured service instance; `run()` returns when it has stopped.

    `extra_outputs` join the configured ones (outputs/build.py) in the same list: the tests
    register a `MemoryOutput` there to see what the pipeline sends. `shard` is this
    replica's share of the cameras (config/shard.py); default: resolved from the config and
    `environ` (ConfigError if it cannot be).
    """

    def __init__(
        self,
        *,
        config: ServiceConfig,
        environ: Mapping[str, str] | None = None,
        extra_outputs: Sequence[Output] = (),
        shard: Shard | None = None,
        config_path: Path | None = None,
    ) -> None:
        """`config_path`: the file `config` was loaded from; SIGHUP reloads it (without
        one, SIGHUP is ignored)."""
        self._environ = os.environ if environ is None else environ
        if shard is None:
            shard = resolve_shard(config.shard, environ=self._environ)
        self.shard = shard
        credentials = self._environ.get("CREDENTIALS_DIRECTORY")
        self._credentials_dir = Path(credentials) if credentials else None
        self._stop = asyncio.Event()
        self.metrics = Metrics()
        self.notifier = SystemdNotifier(environ=self._environ)
        self._outputs = OutputSet(extra=extra_outputs)
        self._running = LiveConfig(
            config=config,
            shard=shard,
            outputs=self._outputs,
            path=config_path,
            metrics=self.metrics,
            notifier=self.notifier,
            environ=self._environ,
        )
        self.run_id = new_run_id()
        self.metrics_server: MetricsServer | None = None
        self.web: WebOutput | None = None
        self.pipeline: ResultPipeline | None = None
        self.detector: OpenVinoDetector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._expiry: asyncio.Task[None] | None = None
        self.snapshots: SnapshotWorker | None = None
        self.main_streams: MainStreamSet | None = None
        self.ready = asyncio.Event()
        self._group: TaskGroupType | None = None

    def request_stop(self) -> None:
        self._stop.set()

    def _spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """`work` as a named task of the one group; it runs until the stop cancels it."""
        if self._group is None:
            work.close()
            raise RuntimeError(f"{name}: the service's task group is not running")
        task = self._group.create_task(work, name=name)
        self._tasks.append(task)
        return task

    async def run(self) -> int:
        config = self._running.config
        cameras = self._running.enabled_cameras()
        if not any(camera.enabled for camera in config.cameras):
            log.error("no camera is enabled in the configuration; nothing to do")
            return 2
        self._running.report_shard(self.metrics)
        install_signal_handlers(
            asyncio.get_running_loop(), self.request_stop, reload=self._running.request_reload
        )
        metrics = self.metrics
        metrics.build.info({"version": __version__, "python": sys.version.split()[0]})
        for camera in cameras:
            metrics.register_camera(camera.id)

        self.web = build_web_output(config, cameras=cameras)
        if config.metrics.enabled:
            self.metrics_server = start_endpoint(
                config.metrics,
                metrics=self.metrics,
                health=self._health,
                live=self._live,
                web=self.web,
                environ=self._environ,
                credentials_dir=self._credentials_dir,
            )
        try:
            return await self._run_started()
        finally:
            remove_signal_handlers(asyncio.get_running_loop())
            if self.metrics_server is not None:
                # stop() joins the server's thread: not on the loop.
                await asyncio.to_thread(self.metrics_server.stop)
            self.notifier.close()

    def _live(self) -> bool:
        """/livez: the watchdog's rule; starting up counts as alive (startup probes wait)."""
        if self.pipeline is None:
            return True
        return self.pipeline.pipeline_alive(window_s=self._running.flow_window_s())

    def _health(self) -> tuple[bool, dict[str, object]]:
        if self.pipeline is None:
            if self.ready.is_set():  # a shard without cameras: up is all it can be
                return True, {"cameras": {}, "shard": str(self.shard)}
            return False, {"starting": True}
        return self.pipeline.health(window_s=self._running.flow_window_s())

    async def _run_started(self) -> int:
        config, enabled = self._running.config, self._running.enabled_cameras()
        if not enabled:
            return await self._run_without_cameras()
        store = await open_snapshot_store(config.snapshot_dir)
        cache_dir = model_cache_dir(config, environ=self._environ)
        self.detector = detector = await load_detector(config, cache_dir=cache_dir)
        devices = report_device(detector, metrics=self.metrics, requested=config.model.device)
        outputs = self._build_outputs(enabled)
        if any(camera.snapshots.enabled for camera in enabled):
            self.snapshots, self.main_streams = await start_snapshots(
                enabled,
                store=store,
                on_result=self._on_snapshot,
                model_xml=resolve_model_xml(config),
                cache_dir=cache_dir,
                metrics=self.metrics.main_stream,
                environ=self._environ,
                credentials_dir=self._credentials_dir,
            )
        self.pipeline = pipeline = ResultPipeline(
            node_id=config.node_id,
            run_id=self.run_id,
            cameras=enabled,
            outputs=outputs,
            metrics=self.metrics,
            model_name=f"{detector.info.model_name}/{detector.info.precision}",
            device=devices,
            snapshots=self.snapshots,
            latest=None if self.web is None else self.web.latest,
        )
        self._running.cameras = cameras = CameraRuntime(
            cameras=enabled,
            detector=detector,
            pipeline=pipeline,
            metrics=self.metrics,
            environ=self._environ,
            credentials_dir=self._credentials_dir,
            batch_wait_s=config.model.batch_wait_ms / 1000.0,
        )
        if self._stop.is_set():  # asked to stop while the model compiled
            if self.main_streams is not None:
                await self.main_streams.stop()
            return 0
        try:
            await self._run_group(cameras)
        finally:
            await cameras.readers.stop()
            if self.main_streams is not None:
                await self.main_streams.stop()
            await cameras.wait_idle()
        log.info("edge-facedet stopped")
        return 0

    def _on_snapshot(self, result: SnapshotResult) -> None:
        if self.pipeline is not None:
            self.pipeline.tracks.on_snapshot(result)
        if self.web is not None:
            self.web.snapshot_ready(result)

    def _build_outputs(self, enabled: list[CameraConfig]) -> list[Output]:
        context = OutputContext(
            metrics=self.metrics,
            environ=self._environ,
            credentials_dir=self._credentials_dir,
            web=self.web,
        )
        return self._running.build_outputs(context=context, cameras=enabled)

    async def _run_without_cameras(self) -> int:
        """A shard that owns no camera still runs: its status shows it is up and idle.

        Scaled beyond its cameras, it must not exit (a StatefulSet would restart it forever);
        no model is loaded, as nothing would be detected.
        """
        log.warning("shard %s owns no camera; running for its status only", self.shard)
        self._build_outputs([])
        async with TaskGroup() as group:
            self._group = group
            self._running.start_reloader(self._spawn)
            await self._outputs.start(self._spawn)
            self._spawn(feed_watchdog(self.notifier), name="systemd-status")
            self.notifier.ready(f"shard {self.shard}: no camera")
            self.ready.set()
            group.create_task(self._stop_when_asked(), name="stop")
        log.info("edge-facedet stopped")
        return 0

    async def _run_group(self, cameras: CameraRuntime) -> None:
        """Every long-running task in one TaskGroup, started in order; returns once stopped."""
        pipeline = cameras.pipeline
        async with TaskGroup() as group:
            self._group = group
            await self._outputs.start(self._spawn)
            self._running.start_reloader(self._spawn)
            if self.snapshots is not None:
                self._spawn(self.snapshots.run(), name="snapshots")
            self._expiry = self._spawn(expire_tracks(pipeline), name="track-expiry")
            cameras.readers.start()
            self._spawn(cameras.scheduler.run(), name="scheduler")
            report = report_to_systemd(
                notifier=self.notifier, pipeline=pipeline, window_s=self._running.flow_window_s()
            )
            self._spawn(report, name="systemd-status")
            self.notifier.ready(pipeline.status_line())
            self.ready.set()
            log.info(
                "edge-facedet %s running: %d cameras, model %s on %s",
                __version__,
                len(cameras.readers),
                cameras.detector.info.model_name,
                pipeline.device,
            )
            group.create_task(self._stop_when_asked(), name="stop")

    async def _stop_when_asked(self) -> None:
        await self._stop.wait()
        log.info("stopping")
        self.notifier.stopping()
        await self._running.stop_reloader()
        if self._expiry is not None:
            # From here on the open tracks end as a shutdown: stopped readers send no frames,
            # and the timer would call a track lost the moment its max_age_s ran out.
            self._expiry.cancel()
        if self._running.cameras is not None:
            await self._running.cameras.stop()
        if self.snapshots is not None:
            await self.snapshots.close(timeout_s=SNAPSHOT_DRAIN_S)
        await self._outputs.close()
        # What is left runs forever by design; cancelling it lets the group exit.
        for task in self._tasks:
            task.cancel()
