"""A camera's face tracks, delivered: events to every output, snapshots through the worker.

The result pipeline hands each processed frame's detections here (`observe`) and gets back
the track id of each detection for its faces message. This module owns what follows from
the tracks (tracking.lifecycle decides *when*): the `events` messages (outputs.events), the
snapshot jobs (outputs.snapshots.worker renders them off the loop, in order, bounded), the
snapshot JPEGs handed to every output when they are ready, and the track metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from edge_facedet.logthrottle import every_power_of_two
from edge_facedet.outputs.events import event_payload
from edge_facedet.outputs.snapshots.worker import SnapshotJob
from edge_facedet.tracking.events import EndReason, EventType
from edge_facedet.tracking.lifecycle import CameraTracks

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edge_facedet.config import CameraConfig
    from edge_facedet.frames import Detections, Frame
    from edge_facedet.outputs.base import ResultSink
    from edge_facedet.outputs.metrics import TrackMetrics
    from edge_facedet.outputs.snapshots.worker import SnapshotResult
    from edge_facedet.tracking.lifecycle import Observation, SnapshotRequest

__all__ = ["SnapshotQueue", "TrackOutputs"]

log = logging.getLogger(__name__)


class SnapshotQueue(Protocol):
    """Where snapshot jobs go (outputs.snapshots.worker.SnapshotWorker)."""

    def prepare(self, job: SnapshotJob) -> SnapshotJob:
        """`job` as it will be rendered: with the main stream's packets attached when its
        camera's main stream can serve it (`job.main`), else as it is."""
        ...

    def submit(self, job: SnapshotJob) -> bool:
        """Queue `job` without blocking; False when the queue is full (the job is dropped)."""
        ...


class TrackOutputs:
    """Every tracking camera's tracks, events and snapshots; see the module docstring."""

    def __init__(
        self,
        *,
        cameras: Sequence[CameraConfig],
        id_prefix: Callable[[str], str],
        outputs: Sequence[ResultSink],
        metrics: TrackMetrics,
        snapshots: SnapshotQueue | None,
        on_open_tracks_changed: Callable[[str], None],
    ) -> None:
        """`id_prefix(camera_id)` is the prefix of the camera's track ids (node, camera,
        run); `on_open_tracks_changed(camera_id)` is called when a camera's count of open
        tracks changes (the pipeline re-publishes its state, which carries the count)."""
        self._outputs = tuple(outputs)
        self._metrics = metrics
        self._snapshot_queue = snapshots
        self._on_open_changed = on_open_tracks_changed
        self._configs = {camera.id: camera for camera in cameras}
        self._cameras = {
            camera.id: CameraTracks(camera=camera, id_prefix=id_prefix(camera.id))
            for camera in cameras
            if camera.tracking.enabled
        }
        self._open = dict.fromkeys(self._cameras, 0)
        self._snapshot_failures = 0
        # Cameras a frame came from since the last `expire`: their frames still come.
        self._fed: set[str] = set()

    # -- cameras a reload adds or removes ---------------------------------------------------

    def add_camera(self, camera: CameraConfig, *, id_prefix: str) -> None:
        """Track a camera a reload added or restarted; `id_prefix` as in the constructor."""
        self._configs = {**self._configs, camera.id: camera}
        if camera.tracking.enabled:
            self._cameras = {
                **self._cameras,
                camera.id: CameraTracks(camera=camera, id_prefix=id_prefix),
            }
            self._open[camera.id] = 0
            self._metrics.open.labels(camera=camera.id).set(0)

    def remove_camera(self, camera_id: str) -> None:
        """Forget a camera (end its tracks first: `end_all`); its late snapshots are dropped."""
        self._configs = {k: v for k, v in self._configs.items() if k != camera_id}
        self._cameras = {k: v for k, v in self._cameras.items() if k != camera_id}
        self._open.pop(camera_id, None)

    def replace_output(self, old: ResultSink, new: ResultSink) -> None:
        self._outputs = tuple(new if sink is old else sink for sink in self._outputs)

    def tracking(self, camera_id: str) -> bool:
        return camera_id in self._cameras

    def open_tracks(self, camera_id: str) -> int:
        return self._open.get(camera_id, 0)

    # -- on the loop, per processed frame -------------------------------------------------

    def observe(self, *, frame: Frame, detections: Detections) -> tuple[str | None, ...]:
        """Track `frame`'s detections; publish what follows; each detection's track id."""
        tracks = self._cameras[frame.camera_id]
        self._fed.add(frame.camera_id)
        observation = tracks.observe(frame=frame, detections=detections)
        self._deliver(frame.camera_id, observation)
        return observation.track_ids

    def expire(self, *, now: float) -> None:
        """End tracks lost by `now` (monotonic) on cameras whose frames stopped coming: no
        frame since the previous call.

        A camera whose frames still come ends its lost tracks itself, on the frames' capture
        clock. `now` is the wall clock: a frame read behind the live stream or queued for
        the detector is older than that, so `now` would end a track it still shows.
        """
        fed, self._fed = self._fed, set()
        for camera_id, tracks in self._cameras.items():
            if camera_id not in fed:
                self._deliver(camera_id, tracks.expire(now=now))

    def end_all(self, camera_id: str | None, *, reason: EndReason) -> None:
        """End every open track of one camera (None: of all cameras)."""
        at = datetime.now(timezone.utc)
        for tracking_id, tracks in self._cameras.items():
            if camera_id is None or tracking_id == camera_id:
                self._deliver(tracking_id, tracks.end_all(reason=reason, at=at))

    # -- delivery -------------------------------------------------------------------------

    def _deliver(self, camera_id: str, observation: Observation) -> None:
        metrics = self._metrics
        for decided, request in zip(observation.events, observation.snapshots, strict=True):
            event = decided
            if request is not None:
                # The event goes out before the JPEG exists: its snapshot_source is the
                # picture the job was queued with (the main stream only when its packets for
                # this moment are pinned); a later failure of that render falls back to the
                # detected picture, counted and logged (snapshots/worker.py).
                source = self._submit(camera_id, request=request)
                event = dataclasses.replace(
                    decided, snapshot=source is not None, snapshot_source=source
                )
            payload = event_payload(event=event)
            for sink in self._outputs:
                sink.publish_event(camera_id=camera_id, payload=payload)
            metrics.events.labels(camera=camera_id, type=event.type.value).inc()
            if event.type is EventType.NEW:
                metrics.started.labels(camera=camera_id).inc()
        open_now = self._cameras[camera_id].open_count
        if open_now != self._open[camera_id]:
            self._open[camera_id] = open_now
            metrics.open.labels(camera=camera_id).set(open_now)
            self._on_open_changed(camera_id)

    def _submit(self, camera_id: str, *, request: SnapshotRequest) -> str | None:
        """Queue the snapshot; the source of its picture ("main" | "detect"), None if not
        queued."""
        queue = self._snapshot_queue
        config = self._configs[camera_id].snapshots
        if queue is None:
            return None
        job = queue.prepare(
            SnapshotJob(
                camera_id=camera_id,
                event_id=request.event_id,
                picture=request.picture,
                mode=config.mode,
                config=config,
                box_norm=request.box_norm,
                boxes_norm=request.boxes_norm,
                time=request.time,
            )
        )
        if not queue.submit(job):
            self._metrics.snapshots.labels(camera=camera_id, result="dropped").inc()
            return None
        return "detect" if job.main is None else "main"

    def on_snapshot(self, result: SnapshotResult) -> None:
        """The worker's result, on the loop: hand the JPEG to every output, count it."""
        camera_id = result.job.camera_id
        metrics = self._metrics
        if camera_id not in self._configs:
            return  # removed by a reload: its retained snapshot was cleared, not to come back
        if result.superseded:
            metrics.snapshots.labels(camera=camera_id, result="superseded").inc()
            return
        if result.jpeg is not None:
            for sink in self._outputs:
                sink.set_snapshot(camera_id=camera_id, jpeg=result.jpeg)
            metrics.snapshots.labels(camera=camera_id, result="published").inc()
            metrics.snapshot_bytes.labels(camera=camera_id).inc(len(result.jpeg))
        if result.error is not None:
            metrics.snapshots.labels(camera=camera_id, result="failed").inc()
            self._snapshot_failures += 1
            if every_power_of_two(self._snapshot_failures):
                log.warning(
                    "camera %s: snapshot of %s failed: %s (failures so far: %d)",
                    camera_id,
                    result.job.event_id,
                    result.error,
                    self._snapshot_failures,
                )
