"""The running service: wiring, start order, one top-level TaskGroup, signals, stop order.

Start: metrics endpoint -> snapshot directory checked -> model compiled (worker thread) ->
outputs started (the MQTT connection attempted) -> snapshot worker -> cameras -> scheduler ->
READY=1. Stop (SIGTERM/SIGINT): STOPPING=1 -> cameras told to stop -> in-flight inference
finishes -> every open track ends (`end`, reason shutdown) -> queued snapshots rendered ->
outputs closed (`stopped` published) -> the group is cancelled -> exit 0. The outputs are a
list (outputs/build.py makes it from the config); the result pipeline fans out to every one.
Reload (SIGHUP): reload.py reads and validates the file; `apply` here starts, stops or
restarts only the cameras that changed and swaps the MQTT output for one with new settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet import __version__
from edge_facedet._compat import TaskGroup
from edge_facedet.config import detect_open_url, display_detect_url
from edge_facedet.config.diff import diff_configs
from edge_facedet.config.shard import Shard, config_for_shard, resolve_shard
from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.model import default_model_root, model_xml_path
from edge_facedet.inference.scheduler import Scheduler
from edge_facedet.outputs.build import (
    OutputContext,
    build_mqtt_output,
    build_outputs,
    build_web_output,
)
from edge_facedet.outputs.http import MetricsServer
from edge_facedet.outputs.httpauth import HttpAuth
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt.output import MqttOutput
from edge_facedet.outputs.mqtt.topics import Topics
from edge_facedet.outputs.payloads import new_run_id
from edge_facedet.outputs.pipeline import ResultPipeline
from edge_facedet.outputs.snapshots.mainwiring import MainStreamSet
from edge_facedet.outputs.snapshots.store import SnapshotStore
from edge_facedet.outputs.snapshots.worker import SnapshotWorker
from edge_facedet.outputs.web import WebOutput
from edge_facedet.reload import OK, Reloader, ReloadReport, file_sha256
from edge_facedet.sharding import camera_loads, plan_shard
from edge_facedet.sources.decoders import prefer_rtsp_over_tcp
from edge_facedet.sources.opencv import keep_opencv_in_reader_threads
from edge_facedet.sources.reader import CameraReader, CameraStatus, ReaderSettings
from edge_facedet.systemd import SystemdNotifier

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from prometheus_client import Counter

    from edge_facedet._compat import TaskGroup as TaskGroupType
    from edge_facedet.config import CameraConfig, ServiceConfig
    from edge_facedet.config.diff import ConfigDiff
    from edge_facedet.inference.slots import LatestFrameSlot
    from edge_facedet.outputs.base import Output
    from edge_facedet.outputs.snapshots.worker import SnapshotResult

log = logging.getLogger(__name__)

# How long to wait for the outputs (the first broker connection) before declaring READY
# anyway: the service must detect with the broker down, so this only avoids a needless
# first backlog.
FIRST_CONNECT_WAIT_S = 3.0
# Readers blocked in a network read get this long to notice the stop; they are daemon
# threads, so one stuck in FFmpeg cannot hold the exit beyond it.
READER_JOIN_S = 2.0
# Batches already in the detector get this long to be published at a stop.
DRAIN_S = 1.0
STATUS_INTERVAL_S = 5.0
# Tracks of a camera whose frames stopped coming are ended by this timer; a camera that
# delivers frames ends them itself, on its next frame after max_age_s.
TRACK_EXPIRY_INTERVAL_S = 1.0
# Snapshots queued at a stop get this long to be rendered and handed to the outputs.
SNAPSHOT_DRAIN_S = 2.0


class ModelLoadError(Exception):
    """The configured model could not be read or compiled for the configured device."""


def resolve_model_xml(config: ServiceConfig) -> Path:
    model = config.model
    if model.path is not None:
        return model.path
    return model_xml_path(model.dir or default_model_root(), model.precision)


def model_cache_dir(config: ServiceConfig, *, environ: Mapping[str, str]) -> Path | None:
    """Where OpenVINO keeps compiled models: the config's, or under systemd's cache dir."""
    if config.model.cache_dir is not None:
        return config.model.cache_dir
    # systemd's CacheDirectory= sets this; a restart then loads the compiled model.
    cache = environ.get("CACHE_DIRECTORY")
    return Path(cache.split(":")[0]) / "openvino" if cache else None


async def load_detector(config: ServiceConfig, *, cache_dir: Path | None) -> OpenVinoDetector:
    """The configured model compiled for its device, in a worker thread; ModelLoadError."""
    model = config.model
    model_xml = resolve_model_xml(config)
    try:
        return await asyncio.to_thread(
            OpenVinoDetector,
            model_xml=model_xml,
            device=model.device,
            performance_hint=model.performance_hint.value,
            batch_size=model.batch_size,
            infer_requests=model.infer_requests,
            cache_dir=cache_dir,
            inference_threads=model.inference_threads,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        # A model that is not face-detection-0204's shape, or a device that is absent:
        # no restart fixes either, so it is reported as configuration (exit 2).
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"model.path/model.device: cannot load {model_xml} on {model.device}: {first_line}"
        ) from None


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
        self._config_path = config_path
        if shard is None:
            shard = resolve_shard(config.shard, environ=self._environ)
        self.shard = shard
        # A shard is its own node (node id, client id, topics); it runs the cameras the
        # assignment gives its index, computed from every enabled camera of the file.
        self._config = config = config_for_shard(config, shard=self.shard)
        self.shard_plan = plan_shard(
            camera_loads(config.cameras), index=self.shard.index, count=self.shard.count
        )
        credentials = self._environ.get("CREDENTIALS_DIRECTORY")
        self._credentials_dir = Path(credentials) if credentials else None
        self._stop = asyncio.Event()
        self.metrics = Metrics()
        self.notifier = SystemdNotifier(environ=self._environ)
        self.run_id = new_run_id()
        self.metrics_server: MetricsServer | None = None
        self.web: WebOutput | None = None
        self._extra_outputs = tuple(extra_outputs)
        self.outputs: list[Output] = []
        self.pipeline: ResultPipeline | None = None
        self.detector: OpenVinoDetector | None = None
        self._readers = _ReaderGroup()
        self._tasks: list[asyncio.Task[None]] = []
        self._scheduler: Scheduler | None = None
        self.snapshots: SnapshotWorker | None = None
        self.main_streams: MainStreamSet | None = None
        self.ready = asyncio.Event()
        self._group: TaskGroupType | None = None
        self._dropped: dict[str, Counter] = {}
        self.reloader: Reloader | None = None
        self._reload_task: asyncio.Task[None] | None = None
        if config_path is not None:
            self.reloader = Reloader(
                path=config_path,
                target=self,
                metrics=self.metrics,
                notifier=self.notifier,
                environ=self._environ,
                running_sha256=file_sha256(config_path),
            )

    def request_stop(self) -> None:
        self._stop.set()

    def _flow_window_s(self) -> float:
        slowest = min((camera.detect_fps for camera in self._enabled_cameras()), default=1.0)
        # A still scene sends frames only at its motion gate's rechecks.
        rechecks = [
            c.motion.recheck_interval_s for c in self._enabled_cameras() if c.motion.enabled
        ]
        return max(10.0, 5.0 / slowest, 3.0 * min(rechecks, default=0.0))

    def _enabled_cameras(self) -> list[CameraConfig]:
        owned = set(self.shard_plan.cameras)
        return [camera for camera in self._config.cameras if camera.id in owned]

    async def run(self) -> int:
        config = self._config
        cameras = self._enabled_cameras()
        if not any(camera.enabled for camera in config.cameras):
            log.error("no camera is enabled in the configuration; nothing to do")
            return 2
        self._report_shard()
        _install_signal_handlers(
            asyncio.get_running_loop(), self.request_stop, reload=self._request_reload
        )
        metrics = self.metrics
        metrics.build.info({"version": __version__, "python": sys.version.split()[0]})
        for camera in cameras:
            metrics.register_camera(camera.id)

        self.web = build_web_output(config, cameras=cameras)
        if config.metrics.enabled:
            self.metrics_server = self._start_metrics_server()
        try:
            return await self._run_started()
        finally:
            _remove_signal_handlers(asyncio.get_running_loop())
            if self.metrics_server is not None:
                # stop() joins the server's thread: not on the loop.
                await asyncio.to_thread(self.metrics_server.stop)
            self.notifier.close()

    def _start_metrics_server(self) -> MetricsServer:
        settings = self._config.metrics
        server = MetricsServer(
            host=settings.host,
            port=settings.port,
            registry=self.metrics.registry,
            health=self._health,
            live=self._live,
            events=self.metrics.http,
            web=self.web,
            auth=None
            if settings.auth is None
            else HttpAuth.from_config(
                settings.auth, environ=self._environ, credentials_dir=self._credentials_dir
            ),
        )
        server.start()
        log.info("metrics on http://%s:%d/metrics", settings.host, server.port)
        return server

    def _live(self) -> bool:
        """/livez: the watchdog's rule; starting up counts as alive (startup probes wait)."""
        if self.pipeline is None:
            return True
        return self.pipeline.pipeline_alive(window_s=self._flow_window_s())

    def _health(self) -> tuple[bool, dict[str, object]]:
        if self.pipeline is None:
            if self.ready.is_set():  # a shard without cameras: up is all it can be
                return True, {"cameras": {}, "shard": str(self.shard)}
            return False, {"starting": True}
        return self.pipeline.health(window_s=self._flow_window_s())

    async def _run_started(self) -> int:
        if not self._enabled_cameras():
            return await self._run_without_cameras()
        store = await self._snapshot_store()
        cache_dir = model_cache_dir(self._config, environ=self._environ)
        self.detector = detector = await load_detector(self._config, cache_dir=cache_dir)
        devices = self._report_device(detector)
        enabled = self._enabled_cameras()
        outputs = self._build_outputs(enabled)
        if any(camera.snapshots.enabled for camera in enabled):
            # Snapshots from the main stream of cameras detected on their substream.
            self.main_streams = await MainStreamSet.build(
                cameras=enabled,
                metrics=self.metrics.main_stream,
                model_xml=resolve_model_xml(self._config),
                cache_dir=cache_dir,
                environ=self._environ,
                credentials_dir=self._credentials_dir,
            )
            self.snapshots = SnapshotWorker(
                store=store,
                on_result=self._on_snapshot,
                main_streams=None if self.main_streams is None else self.main_streams.streams,
            )
        self.pipeline = pipeline = ResultPipeline(
            node_id=self._config.node_id,
            run_id=self.run_id,
            cameras=enabled,
            outputs=outputs,
            metrics=self.metrics,
            model_name=f"{detector.info.model_name}/{detector.info.precision}",
            device=devices,
            snapshots=self.snapshots,
            latest=None if self.web is None else self.web.latest,
        )
        self._scheduler = scheduler = self._build_scheduler(
            enabled, detector=detector, pipeline=pipeline
        )
        self._build_readers(
            enabled=enabled, detector=detector, scheduler=scheduler, pipeline=pipeline
        )

        if self._stop.is_set():  # asked to stop while the model compiled
            if self.main_streams is not None:
                await self.main_streams.stop()
            return 0
        try:
            await self._run_group(scheduler=scheduler, pipeline=pipeline, detector=detector)
        finally:
            await self._readers.stop()
            if self.main_streams is not None:
                await self.main_streams.stop()
            # Callbacks of requests still running would hit a closed loop otherwise; bounded,
            # because a hung device must not hold the exit.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(detector.wait_idle), DRAIN_S)
        log.info("edge-facedet stopped")
        return 0

    async def _snapshot_store(self) -> SnapshotStore | None:
        """The snapshot directory, checked before anything starts (SnapshotDirError)."""
        settings = self._config.snapshot_dir
        if settings is None:
            return None
        store = SnapshotStore(config=settings)
        await asyncio.to_thread(store.start)  # checks, scans and prunes: never on the loop
        return store

    def _on_snapshot(self, result: SnapshotResult) -> None:
        if self.pipeline is not None:
            self.pipeline.tracks.on_snapshot(result)
        if self.web is not None:
            self.web.snapshot_ready(result)

    def _report_device(self, detector: OpenVinoDetector) -> str:
        """Publish the device info metric; the devices the model really runs on."""
        devices = ",".join(detector.info.execution_devices)
        self.metrics.device.info(
            {
                "requested": self._config.model.device,
                "selected": devices,
                "model": detector.info.model_name,
                "precision": detector.info.precision,
            }
        )
        return devices

    def _build_outputs(self, enabled: list[CameraConfig]) -> list[Output]:
        context = self._output_context()
        self.outputs = [*build_outputs(self._config, context=context), *self._extra_outputs]
        for output in self.outputs:
            # Before the first connect, so MQTT's already carries the Home Assistant discovery.
            output.announce(cameras=enabled)
            if isinstance(output, MqttOutput):
                self._set_node_retained(output)
        if self.reloader is not None:
            running = self.reloader.running_sha256
            self.publish_config_report(
                ReloadReport(result=OK, sha256=running, running_sha256=running)
            )
        return self.outputs

    def _output_context(self) -> OutputContext:
        return OutputContext(
            metrics=self.metrics,
            environ=self._environ,
            credentials_dir=self._credentials_dir,
            web=self.web,
        )

    def _set_node_retained(self, output: MqttOutput) -> None:
        """The node's retained messages besides the cameras' (the shard's assignment)."""
        if self.shard.sharded:
            output.set_retained(
                topic=Topics(output.topic_prefix).shard,
                payload=self.shard_plan.payload(),
                qos=self._config.mqtt.qos.status,
            )

    def _report_shard(self) -> None:
        plan = self.shard_plan
        self.metrics.shard.info({"index": str(plan.index), "count": str(plan.count)})
        self.metrics.shard_cameras.set(len(plan.cameras))
        self.metrics.shard_cost.set(plan.cost)
        if self.shard.sharded:
            log.info("node %s is %s", self._config.node_id, plan.summary())

    async def _run_without_cameras(self) -> int:
        """A shard that owns no camera still runs: its status shows it is up and idle.

        Scaled beyond its cameras, it must not exit (a StatefulSet would restart it forever);
        no model is loaded, as nothing would be detected.
        """
        log.warning("shard %s owns no camera; running for its status only", self.shard)
        self._build_outputs([])
        async with TaskGroup() as group:
            self._group = group
            self._start_reloader(group)
            for output in self.outputs:
                task = group.create_task(output.run(), name=f"output-{output.name}")
                self._tasks.append(task)
            await asyncio.gather(
                *(output.wait_ready(FIRST_CONNECT_WAIT_S) for output in self.outputs)
            )
            watchdog = _feed_watchdog(self.notifier)
            self._tasks.append(group.create_task(watchdog, name="systemd-status"))
            self.notifier.ready(f"shard {self.shard}: no camera")
            self.ready.set()
            group.create_task(self._stop_when_asked(), name="stop")
        log.info("edge-facedet stopped")
        return 0

    def _build_scheduler(
        self, enabled: list[CameraConfig], *, detector: OpenVinoDetector, pipeline: ResultPipeline
    ) -> Scheduler:
        # Resolved once: `labels()` takes a lock and builds a key, and drops come in bursts
        # exactly when the CPU is short (profiled: the top Python cost of a saturated run).
        dropped = self._dropped
        for camera in enabled:
            dropped[camera.id] = self.metrics.frames_dropped.labels(camera=camera.id)
        return Scheduler(
            detector=detector,
            camera_ids=[camera.id for camera in enabled],
            on_result=pipeline.handle_batch,
            # .get: a drop in a slot a reload just removed is not counted.
            on_drop=lambda camera_id: c.inc() if (c := dropped.get(camera_id)) else None,
            on_inflight=self.metrics.inflight_requests.set,
            batch_wait_s=self._config.model.batch_wait_ms / 1000.0,
        )

    def _build_readers(
        self,
        *,
        enabled: list[CameraConfig],
        detector: OpenVinoDetector,
        scheduler: Scheduler,
        pipeline: ResultPipeline,
    ) -> None:
        """One reader per enabled camera, feeding the scheduler's slots (not started yet)."""
        prefer_rtsp_over_tcp()
        keep_opencv_in_reader_threads()
        for index, camera in enumerate(enabled):
            self._readers.append(
                self._new_reader(
                    camera,
                    # Spread the cameras' due frames over the detect period: cameras started
                    # together would otherwise all present a frame at the same moment, and
                    # the last of each burst waits for all the others' inferences.
                    phase=index / len(enabled),
                    detector=detector,
                    sink=scheduler.slot(camera.id),
                    pipeline=pipeline,
                )
            )

    def _new_reader(
        self,
        camera: CameraConfig,
        *,
        phase: float,
        detector: OpenVinoDetector,
        sink: LatestFrameSlot,
        pipeline: ResultPipeline,
    ) -> CameraReader:
        loop = asyncio.get_running_loop()
        readers = self._readers
        holder: list[CameraReader] = []

        def report_status(status: CameraStatus) -> None:
            # Reader threads report here; the pipeline lives on the loop. A reader a reload
            # replaced may still report: only the camera's current reader is heard.
            def handle() -> None:
                if holder and readers.current(camera.id) is holder[0]:
                    pipeline.handle_status(status)

            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(handle)

        reader = CameraReader(
            settings=ReaderSettings.from_camera(
                camera,
                # The substream when one is configured: decoding dominates the cost per
                # camera, and the network input is 448x448 whatever is read.
                url=detect_open_url(
                    camera, environ=self._environ, credentials_dir=self._credentials_dir
                ),
                input_size=detector.input_size,
                detect_phase=phase,
                activity=pipeline.activity(camera.id),
            ),
            sink=sink,
            on_status=report_status,
            metrics=self.metrics,
        )
        holder.append(reader)
        log.info(
            "camera %s: %s at %.1f detections/s",
            camera.id,
            display_detect_url(camera),
            camera.detect_fps,
        )
        return reader

    async def _run_group(
        self, *, scheduler: Scheduler, pipeline: ResultPipeline, detector: OpenVinoDetector
    ) -> None:
        """Every long-running task in one TaskGroup, started in order; returns once stopped."""
        async with TaskGroup() as group:
            self._group = group
            for output in self.outputs:
                task = group.create_task(output.run(), name=f"output-{output.name}")
                self._tasks.append(task)
            await asyncio.gather(
                *(output.wait_ready(FIRST_CONNECT_WAIT_S) for output in self.outputs)
            )
            self._start_reloader(group)
            if self.snapshots is not None:
                self._tasks.append(group.create_task(self.snapshots.run(), name="snapshots"))
            self._tasks.append(group.create_task(_expire_tracks(pipeline), name="track-expiry"))
            self._readers.start()
            self._tasks.append(group.create_task(scheduler.run(), name="scheduler"))
            report = _report_to_systemd(
                notifier=self.notifier, pipeline=pipeline, window_s=self._flow_window_s()
            )
            self._tasks.append(group.create_task(report, name="systemd-status"))
            self.notifier.ready(pipeline.status_line())
            self.ready.set()
            log.info(
                "edge-facedet %s running: %d cameras, model %s on %s",
                __version__,
                len(self._readers),
                detector.info.model_name,
                pipeline.device,
            )
            group.create_task(self._stop_when_asked(), name="stop")

    # -- reload (reload.py's ReloadTarget) -------------------------------------------------

    def _request_reload(self) -> None:
        if self.reloader is None:
            log.warning("SIGHUP ignored: the service was not started from a file")
            return
        self.reloader.request()

    def _start_reloader(self, group: TaskGroupType) -> None:
        if self.reloader is not None:
            self._reload_task = group.create_task(self.reloader.run(), name="reload")
            self._tasks.append(self._reload_task)

    def _owned(self, config: ServiceConfig) -> list[CameraConfig]:
        """The enabled cameras of `config` this shard runs (index and count stay: `shard:`
        changes apply at the next start)."""
        plan = plan_shard(
            camera_loads(config.cameras), index=self.shard.index, count=self.shard.count
        )
        owned = set(plan.cameras)
        return [camera for camera in config.cameras if camera.id in owned]

    def diff(self, new: ServiceConfig) -> ConfigDiff:
        diff = diff_configs(
            self._config, config_for_shard(new, shard=self.shard), cameras=self._owned
        )
        if self._scheduler is None and diff.cameras_touched:
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
        live = {"cameras": new.cameras, "defaults": new.defaults, "mqtt": new.mqtt}
        if self._scheduler is None:
            live = {"mqtt": new.mqtt}
        owned = {camera.id: camera for camera in self._owned(new)}
        if self._scheduler is not None and diff.cameras_touched:
            await self._apply_cameras(diff, owned=owned, order=list(owned))
        # Restart-only sections keep their running values, so the next diff still names them.
        self._config = self._config.model_copy(update=live)
        self.shard_plan = plan_shard(
            camera_loads(self._config.cameras), index=self.shard.index, count=self.shard.count
        )
        if diff.mqtt:
            await self._replace_mqtt_output()
        for output in self.outputs:
            if isinstance(output, MqttOutput):
                self._set_node_retained(output)

    async def _apply_cameras(
        self, diff: ConfigDiff, *, owned: dict[str, CameraConfig], order: list[str]
    ) -> None:
        """Stop the removed and changed cameras, then start the added and changed ones; the
        others' readers, slots, tracks and states are not touched."""
        pipeline, scheduler, detector = self.pipeline, self._scheduler, self.detector
        if pipeline is None or scheduler is None or detector is None:
            return  # diff() moved camera changes to the next start
        changed = [change.camera_id for change in diff.changed]
        leaving = [*diff.removed, *changed]
        for camera_id in leaving:
            pipeline.remove_camera(camera_id)  # tracks end, reason reload
        await self._readers.stop_some(leaving)
        for camera_id in leaving:
            scheduler.remove_camera(camera_id)
        for camera_id in diff.removed:
            self._dropped.pop(camera_id, None)
            self.metrics.unregister_camera(camera_id)
            for output in self.outputs:
                if isinstance(output, (MqttOutput, WebOutput)):
                    output.forget_camera(camera_id)
            log.info("camera %s: removed by the reload", camera_id)
        starting = [owned[camera_id] for camera_id in (*diff.added, *changed)]
        for camera in starting:
            self.metrics.register_camera(camera.id)
            self._dropped[camera.id] = self.metrics.frames_dropped.labels(camera=camera.id)
            pipeline.add_camera(camera, run_id=new_run_id())
            reader = self._new_reader(
                camera,
                phase=order.index(camera.id) / len(order),
                detector=detector,
                sink=scheduler.add_camera(camera.id),
                pipeline=pipeline,
            )
            self._readers.append(reader)
            reader.start()
        if starting:
            for output in self.outputs:
                output.announce(cameras=starting)

    async def _replace_mqtt_output(self) -> None:
        """Close the MQTT output and start one with the new settings that takes over what
        the old one had not sent (its outbox, latest states and snapshots)."""
        old = next((o for o in self.outputs if isinstance(o, MqttOutput)), None)
        if old is None or self._group is None:
            return
        # Closed first: the new one may use the same client id, which the broker would let
        # take over the old connection mid-publish.
        await old.close()
        config = self._config
        new = build_mqtt_output(
            config=config.mqtt, node_id=config.node_id, context=self._output_context()
        )
        new.take_over(old)
        new.announce(cameras=self._enabled_cameras())
        self.outputs = [new if output is old else output for output in self.outputs]
        if self.pipeline is not None:
            self.pipeline.replace_output(old, new)
        self._tasks.append(self._group.create_task(new.run(), name=f"output-{new.name}"))
        log.info("MQTT: reconnecting with the reloaded settings")

    def publish_config_report(self, report: ReloadReport) -> None:
        for output in self.outputs:
            if isinstance(output, MqttOutput):
                output.set_retained(
                    topic=Topics(output.topic_prefix).config,
                    payload=report.payload(),
                    qos=max(self._config.mqtt.qos.status, 1),
                )

    async def _stop_when_asked(self) -> None:
        await self._stop.wait()
        log.info("stopping")
        self.notifier.stopping()
        if self._reload_task is not None:
            # A reload half-way through a camera's restart must not start a reader after
            # the readers are stopped.
            self._reload_task.cancel()
            await asyncio.wait((self._reload_task,))
        if self.pipeline is not None:
            self.pipeline.begin_shutdown()
        await self._readers.stop()
        if self._scheduler is not None and not await self._scheduler.drain(timeout=DRAIN_S):
            log.warning("inference still running %.1f s after the stop; results dropped", DRAIN_S)
        if self.pipeline is not None:
            self.pipeline.end_tracks()
        if self.snapshots is not None:
            await self.snapshots.close(timeout_s=SNAPSHOT_DRAIN_S)
        for output in self.outputs:
            await output.close()
        # What is left runs forever by design; cancelling it lets the group exit.
        for task in self._tasks:
            task.cancel()


class _ReaderGroup:
    """The camera readers (threads): started together, stopped once with one deadline."""

    def __init__(self) -> None:
        self._readers: list[CameraReader] = []
        self._stopped = False

    def __len__(self) -> int:
        return len(self._readers)

    def append(self, reader: CameraReader) -> None:
        self._readers.append(reader)

    def current(self, camera_id: str) -> CameraReader | None:
        """The camera's running reader (None once a reload removed it)."""
        for reader in self._readers:
            if reader.status.camera_id == camera_id:
                return reader
        return None

    async def stop_some(self, camera_ids: Sequence[str]) -> None:
        """Stop and forget the readers of `camera_ids` (a reload), within one deadline."""
        leaving = [r for r in self._readers if r.status.camera_id in set(camera_ids)]
        if not leaving:
            return
        self._readers = [r for r in self._readers if r not in leaving]
        await _stop_readers(leaving)

    def start(self) -> None:
        for reader in self._readers:
            reader.start()

    async def stop(self) -> None:
        """Tell every reader to stop and wait for them, once, within one shared deadline."""
        if self._stopped:
            return
        self._stopped = True
        await _stop_readers(self._readers)


async def _stop_readers(readers: Sequence[CameraReader]) -> None:
    """Tell `readers` to stop and wait for them within one shared deadline (off the loop)."""
    for reader in readers:
        reader.stop()

    def join_all() -> list[str]:
        deadline = time.monotonic() + READER_JOIN_S
        return [
            reader.status.camera_id
            for reader in readers
            if not reader.join(max(0.0, deadline - time.monotonic()))
        ]

    stuck = await asyncio.to_thread(join_all)
    if stuck:
        log.warning("camera readers still in a blocking read: %s", ", ".join(stuck))


async def _expire_tracks(pipeline: ResultPipeline) -> None:
    while True:
        await asyncio.sleep(TRACK_EXPIRY_INTERVAL_S)
        pipeline.expire_tracks()


async def _report_to_systemd(
    *, notifier: SystemdNotifier, pipeline: ResultPipeline, window_s: float
) -> None:
    """Feeds the systemd watchdog while frames flow, and refreshes STATUS=."""
    interval = min(notifier.watchdog_interval_s or STATUS_INTERVAL_S, STATUS_INTERVAL_S)
    while True:
        if pipeline.pipeline_alive(window_s=window_s):
            notifier.watchdog()
        else:
            log.error("cameras are streaming but no frame reached the detector recently")
        notifier.status(pipeline.status_line())
        await asyncio.sleep(interval)


async def _feed_watchdog(notifier: SystemdNotifier) -> None:
    """Nothing to flow is alive by the watchdog policy (architecture.md)."""
    interval = min(notifier.watchdog_interval_s or STATUS_INTERVAL_S, STATUS_INTERVAL_S)
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, handler: Callable[[], None], *, reload: Callable[[], None]
) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler)
    # Installed at once: SIGHUP's default action ends the process. One before READY waits
    # until the service runs (the reloader starts then).
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload)


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signum)
