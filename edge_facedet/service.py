"""The running service: wiring, start order, one top-level TaskGroup, signals, stop order.

Start: metrics endpoint -> model compiled (worker thread) -> MQTT connection attempted ->
cameras -> scheduler -> READY=1. Stop (SIGTERM/SIGINT): STOPPING=1 -> cameras told to stop
-> in-flight inference finishes -> `stopped` published -> the group is cancelled -> exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet import __version__
from edge_facedet.config import detect_open_url, display_detect_url
from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.scheduler import Scheduler
from edge_facedet.outputs.http import MetricsServer
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt.publisher import MqttPublisher
from edge_facedet.outputs.pipeline import ResultPipeline
from edge_facedet.sources.decoders import DecodeOptions, Decoder
from edge_facedet.sources.reader import CameraReader, CameraStatus, keep_opencv_in_reader_threads
from edge_facedet.systemd import SystemdNotifier
from edge_facedet.tools.assets import default_model_root, model_xml_path

if sys.version_info >= (3, 11):
    from asyncio import TaskGroup
else:  # pragma: no cover - exercised on Python 3.10 only
    from taskgroup import TaskGroup

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edge_facedet.config import CameraConfig, ServiceConfig

log = logging.getLogger(__name__)

# How long to wait for the first broker connection before declaring READY anyway: the
# service must detect with the broker down, so this only avoids a needless first backlog.
FIRST_CONNECT_WAIT_S = 3.0
# Readers blocked in a network read get this long to notice the stop; they are daemon
# threads, so one stuck in FFmpeg cannot hold the exit beyond it.
READER_JOIN_S = 2.0
# Batches already in the detector get this long to be published at a stop.
DRAIN_S = 1.0
STATUS_INTERVAL_S = 5.0


class ModelLoadError(Exception):
    """The configured model could not be read or compiled for the configured device."""


def resolve_model_xml(config: ServiceConfig) -> Path:
    model = config.model
    if model.path is not None:
        return model.path
    return model_xml_path(model.dir or default_model_root(), model.precision)


class Service:
    """One configured service instance; `run()` returns when it has stopped."""

    def __init__(
        self,
        *,
        config: ServiceConfig,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._environ = os.environ if environ is None else environ
        credentials = self._environ.get("CREDENTIALS_DIRECTORY")
        self._credentials_dir = Path(credentials) if credentials else None
        self._stop = asyncio.Event()
        self.metrics = Metrics()
        self.notifier = SystemdNotifier(environ=self._environ)
        self.run_id = uuid.uuid4().hex[:12]
        self.metrics_server: MetricsServer | None = None
        self.publisher: MqttPublisher | None = None
        self.pipeline: ResultPipeline | None = None
        self.detector: OpenVinoDetector | None = None
        self._readers: list[CameraReader] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._scheduler: Scheduler | None = None
        self._readers_stopped = False
        self.ready = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def _model_cache_dir(self) -> Path | None:
        if self._config.model.cache_dir is not None:
            return self._config.model.cache_dir
        # systemd's CacheDirectory= sets this; a restart then loads the compiled model.
        cache = self._environ.get("CACHE_DIRECTORY")
        return Path(cache.split(":")[0]) / "openvino" if cache else None

    def _flow_window_s(self) -> float:
        slowest = min(camera.detect_fps for camera in self._enabled_cameras())
        return max(10.0, 5.0 / slowest)

    def _enabled_cameras(self) -> list[CameraConfig]:
        return [camera for camera in self._config.cameras if camera.enabled]

    async def run(self) -> int:
        config = self._config
        cameras = self._enabled_cameras()
        if not cameras:
            log.error("no camera is enabled in the configuration; nothing to do")
            return 2
        self._install_signal_handlers(asyncio.get_running_loop())
        metrics = self.metrics
        metrics.build.info({"version": __version__, "python": sys.version.split()[0]})
        for camera in cameras:
            metrics.register_camera(camera.id)

        if config.metrics.enabled:
            self.metrics_server = MetricsServer(
                host=config.metrics.host,
                port=config.metrics.port,
                registry=metrics.registry,
                health=self._health,
            )
            self.metrics_server.start()
            log.info(
                "metrics on http://%s:%d/metrics", config.metrics.host, self.metrics_server.port
            )
        try:
            return await self._run_started()
        finally:
            self._remove_signal_handlers(asyncio.get_running_loop())
            if self.metrics_server is not None:
                # shutdown() waits for the server's poll interval: not on the loop.
                await asyncio.to_thread(self.metrics_server.stop)
            self.notifier.close()

    def _health(self) -> tuple[bool, dict[str, object]]:
        if self.pipeline is None:
            return False, {"starting": True}
        return self.pipeline.health(window_s=self._flow_window_s())

    async def _run_started(self) -> int:
        config = self._config
        model = config.model
        model_xml = resolve_model_xml(config)
        try:
            self.detector = detector = await asyncio.to_thread(
                OpenVinoDetector,
                model_xml=model_xml,
                device=model.device,
                performance_hint=model.performance_hint.value,
                batch_size=model.batch_size,
                infer_requests=model.infer_requests,
                cache_dir=self._model_cache_dir(),
                inference_threads=model.inference_threads,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            # A model that is not face-detection-0204's shape, or a device that is absent:
            # no restart fixes either, so it is reported as configuration (exit 2).
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise ModelLoadError(
                f"model.path/model.device: cannot load {model_xml} on {model.device}: {first_line}"
            ) from None
        devices = ",".join(detector.info.execution_devices)
        self.metrics.device.info(
            {
                "requested": model.device,
                "selected": devices,
                "model": detector.info.model_name,
                "precision": detector.info.precision,
            }
        )
        self.publisher = publisher = MqttPublisher(
            config=config.mqtt,
            node_id=config.node_id,
            metrics=self.metrics,
            environ=self._environ,
            credentials_dir=self._credentials_dir,
        )
        enabled = self._enabled_cameras()
        # Before the first connect, so it already carries the Home Assistant discovery.
        publisher.announce_cameras(cameras=enabled)
        self.pipeline = pipeline = ResultPipeline(
            node_id=config.node_id,
            run_id=self.run_id,
            cameras=enabled,
            publisher=publisher,
            metrics=self.metrics,
            model_name=f"{detector.info.model_name}/{detector.info.precision}",
            device=devices,
        )
        loop = asyncio.get_running_loop()
        # Resolved once: `labels()` takes a lock and builds a key, and drops come in bursts
        # exactly when the CPU is short (profiled: the top Python cost of a saturated run).
        dropped = {
            camera.id: self.metrics.frames_dropped.labels(camera=camera.id) for camera in enabled
        }
        self._scheduler = scheduler = Scheduler(
            detector=detector,
            camera_ids=[camera.id for camera in enabled],
            on_result=pipeline.handle_batch,
            on_drop=lambda camera_id: dropped[camera_id].inc(),
            on_inflight=self.metrics.inflight_requests.set,
            batch_wait_s=model.batch_wait_ms / 1000.0,
        )

        def report_status(status: CameraStatus) -> None:
            # Reader threads report here; the pipeline lives on the loop.
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(pipeline.handle_status, status)

        keep_opencv_in_reader_threads()
        for index, camera in enumerate(enabled):
            self._readers.append(
                CameraReader(
                    camera_id=camera.id,
                    # The substream when one is configured: decoding dominates the cost
                    # per camera, and the network input is 448x448 whatever is read.
                    url=detect_open_url(
                        camera, environ=self._environ, credentials_dir=self._credentials_dir
                    ),
                    detect_fps=camera.detect_fps,
                    input_size=detector.input_size,
                    on_frame=scheduler.slot(camera.id).put,
                    claim=scheduler.slot(camera.id).claim,
                    wait_until_empty=scheduler.slot(camera.id).wait_until_empty,
                    realtime=camera.realtime,
                    on_status=report_status,
                    metrics=self.metrics,
                    loop_file=camera.loop,
                    open_timeout_s=camera.open_timeout_s,
                    read_timeout_s=camera.read_timeout_s,
                    stall_timeout_s=camera.stall_timeout_s,
                    reconnect_initial_s=camera.reconnect_initial_s,
                    reconnect_max_s=camera.reconnect_max_s,
                    decode=DecodeOptions(
                        decoder=Decoder(camera.decoder),
                        threads=camera.decoder_threads,
                        keyframes_only=camera.keyframes_only,
                        skip_loop_filter=camera.skip_loop_filter,
                    ),
                    nice=camera.reader_nice,
                    max_lag_s=camera.max_lag_s,
                    # Spread the cameras' due frames over the detect period: cameras started
                    # together would otherwise all present a frame at the same moment, and
                    # the last of each burst waits for all the others' inferences.
                    detect_phase=index / len(enabled),
                )
            )
            log.info(
                "camera %s: %s at %.1f detections/s",
                camera.id,
                display_detect_url(camera),
                camera.detect_fps,
            )

        if self._stop.is_set():  # asked to stop while the model compiled
            return 0
        try:
            async with TaskGroup() as group:
                self._tasks.append(group.create_task(publisher.run(), name="mqtt-publisher"))
                await publisher.wait_connected(FIRST_CONNECT_WAIT_S)
                for reader in self._readers:
                    reader.start()
                self._tasks.append(group.create_task(scheduler.run(), name="scheduler"))
                self._tasks.append(group.create_task(self._report_loop(), name="systemd-status"))
                self.notifier.ready(pipeline.status_line())
                self.ready.set()
                log.info(
                    "edge-facedet %s running: %d cameras, model %s on %s",
                    __version__,
                    len(enabled),
                    detector.info.model_name,
                    devices,
                )
                group.create_task(self._stop_when_asked(), name="stop")
        finally:
            await self._stop_readers()
            # Callbacks of requests still running would hit a closed loop otherwise; bounded,
            # because a hung device must not hold the exit.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(detector.wait_idle), DRAIN_S)
        log.info("edge-facedet stopped")
        return 0

    async def _stop_when_asked(self) -> None:
        await self._stop.wait()
        log.info("stopping")
        self.notifier.stopping()
        await self._stop_readers()
        if self._scheduler is not None and not await self._scheduler.drain(timeout=DRAIN_S):
            log.warning("inference still running %.1f s after the stop; results dropped", DRAIN_S)
        if self.publisher is not None:
            await self.publisher.close()
        # What is left runs forever by design; cancelling it lets the group exit.
        for task in self._tasks:
            task.cancel()

    async def _stop_readers(self) -> None:
        """Tell every reader to stop and wait for them, once, within one shared deadline."""
        if self._readers_stopped:
            return
        self._readers_stopped = True
        for reader in self._readers:
            reader.stop()

        def join_all() -> list[str]:
            deadline = time.monotonic() + READER_JOIN_S
            return [
                reader.status.camera_id
                for reader in self._readers
                if not reader.join(max(0.0, deadline - time.monotonic()))
            ]

        stuck = await asyncio.to_thread(join_all)
        if stuck:
            log.warning("camera readers still in a blocking read at exit: %s", ", ".join(stuck))

    async def _report_loop(self) -> None:
        """Feeds the systemd watchdog while frames flow, and refreshes STATUS=."""
        assert self.pipeline is not None  # noqa: S101 - set before this task starts
        pipeline = self.pipeline
        interval = self.notifier.watchdog_interval_s or STATUS_INTERVAL_S
        interval = min(interval, STATUS_INTERVAL_S)
        while True:
            if pipeline.pipeline_alive(window_s=self._flow_window_s()):
                self.notifier.watchdog()
            else:
                log.error("cameras are streaming but no frame reached the detector recently")
            self.notifier.status(pipeline.status_line())
            await asyncio.sleep(interval)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
