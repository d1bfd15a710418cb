"""This shard's cameras once the model runs: readers -> scheduler -> detector -> pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from edge_facedet.inference.scheduler import Scheduler
from edge_facedet.outputs.mqtt.output import MqttOutput
from edge_facedet.outputs.payloads import new_run_id
from edge_facedet.outputs.web import WebOutput
from edge_facedet.runtime.readers import ReaderGroup
from edge_facedet.sources.decoders import prefer_rtsp_over_tcp
from edge_facedet.sources.opencv import keep_opencv_in_reader_threads

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from prometheus_client import Counter

    from edge_facedet.config import CameraConfig
    from edge_facedet.config.diff import ConfigDiff
    from edge_facedet.inference.detector import OpenVinoDetector
    from edge_facedet.outputs.base import Output
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.pipeline import ResultPipeline

__all__ = ["DRAIN_S", "CameraRuntime"]

log = logging.getLogger(__name__)

# Batches already in the detector get this long to be published at a stop.
DRAIN_S = 1.0


class CameraRuntime:
    """A reader per camera feeds its slot of the scheduler, which batches frames to the
    detector; the results go to the pipeline. A reload adds and removes cameras here without
    touching the others' readers, slots and tracks."""

    def __init__(
        self,
        *,
        cameras: Sequence[CameraConfig],
        detector: OpenVinoDetector,
        pipeline: ResultPipeline,
        metrics: Metrics,
        environ: Mapping[str, str],
        credentials_dir: Path | None,
        batch_wait_s: float,
    ) -> None:
        """The scheduler and one reader per camera (not started yet)."""
        self.detector = detector
        self.pipeline = pipeline
        self._metrics = metrics
        self.readers = ReaderGroup(
            metrics=metrics, environ=environ, credentials_dir=credentials_dir
        )
        # Resolved once: `labels()` takes a lock and builds a key, and drops come in bursts
        # exactly when the CPU is short (profiled: the top Python cost of a saturated run).
        self._dropped: dict[str, Counter] = {
            camera.id: metrics.frames_dropped.labels(camera=camera.id) for camera in cameras
        }
        dropped = self._dropped
        self.scheduler = Scheduler(
            detector=detector,
            camera_ids=[camera.id for camera in cameras],
            on_result=pipeline.handle_batch,
            # .get: a drop in a slot a reload just removed is not counted.
            on_drop=lambda camera_id: c.inc() if (c := dropped.get(camera_id)) else None,
            on_inflight=metrics.inflight_requests.set,
            batch_wait_s=batch_wait_s,
        )
        prefer_rtsp_over_tcp()
        keep_opencv_in_reader_threads()
        for index, camera in enumerate(cameras):
            self.readers.add(
                camera,
                # Spread the cameras' due frames over the detect period: cameras started
                # together would otherwise all present a frame at the same moment, and
                # the last of each burst waits for all the others' inferences.
                phase=index / len(cameras),
                detector=detector,
                sink=self.scheduler.slot(camera.id),
                pipeline=pipeline,
            )

    async def change(
        self,
        diff: ConfigDiff,
        *,
        owned: Mapping[str, CameraConfig],
        outputs: Sequence[Output],
    ) -> None:
        """Stop the removed and changed cameras, then start the added and changed ones of
        `owned` (this shard's cameras of the new config, in its order); the others' readers,
        slots, tracks and states are not touched."""
        pipeline, scheduler, order = self.pipeline, self.scheduler, list(owned)
        changed = [change.camera_id for change in diff.changed]
        leaving = [*diff.removed, *changed]
        for camera_id in leaving:
            pipeline.remove_camera(camera_id)  # tracks end, reason reload
        await self.readers.stop_some(leaving)
        for camera_id in leaving:
            scheduler.remove_camera(camera_id)
        for camera_id in diff.removed:
            self._dropped.pop(camera_id, None)
            self._metrics.unregister_camera(camera_id)
            for output in outputs:
                if isinstance(output, (MqttOutput, WebOutput)):
                    output.forget_camera(camera_id)
            log.info("camera %s: removed by the reload", camera_id)
        starting = [owned[camera_id] for camera_id in (*diff.added, *changed)]
        for camera in starting:
            self._metrics.register_camera(camera.id)
            self._dropped[camera.id] = self._metrics.frames_dropped.labels(camera=camera.id)
            pipeline.add_camera(camera, run_id=new_run_id())
            reader = self.readers.add(
                camera,
                phase=order.index(camera.id) / len(order),
                detector=self.detector,
                sink=scheduler.add_camera(camera.id),
                pipeline=pipeline,
            )
            reader.start()
        if starting:
            for output in outputs:
                output.announce(cameras=starting)

    async def stop(self) -> None:
        """The stop's detection half: cameras stopping now end their tracks as a shutdown,
        the readers stop, the batches in flight are published (bounded), every track ends."""
        self.pipeline.begin_shutdown()
        await self.readers.stop()
        if not await self.scheduler.drain(timeout=DRAIN_S):
            log.warning("inference still running %.1f s after the stop; results dropped", DRAIN_S)
        self.pipeline.end_tracks()

    async def wait_idle(self) -> None:
        """Wait for the detector's requests still running, at most DRAIN_S."""
        # Their callbacks would hit a closed loop otherwise; bounded, because a hung device
        # must not hold the exit.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(self.detector.wait_idle), DRAIN_S)
