"""What happens to a batch's results and to camera status changes, on the event loop.

Owns the per-camera output side: thresholds and filters (post-processing), the publish
policy, the faces and state payloads handed to every output (base.py's `ResultSink`), the
per-frame metrics, and the flow figures that health, the systemd watchdog and STATUS= are
computed from. What it keeps per camera is cameraoutput.py's `CameraOutput`. Face tracks,
their events and snapshots are tracks.py's (`TrackOutputs`): the pipeline hands it every
frame of a tracking camera and its status changes.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from edge_facedet.inference.postprocess import to_detections
from edge_facedet.outputs.cameraoutput import CameraOutput
from edge_facedet.outputs.payloads import faces_payload
from edge_facedet.outputs.tracks import TrackOutputs
from edge_facedet.sources.status import CameraState
from edge_facedet.tracking.events import EndReason

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edge_facedet.config import CameraConfig
    from edge_facedet.frames import Frame
    from edge_facedet.inference.detector import BatchResult
    from edge_facedet.outputs.base import ResultSink
    from edge_facedet.outputs.latest import LatestFrames
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.tracks import SnapshotQueue
    from edge_facedet.sources.activity import CameraActivity
    from edge_facedet.sources.status import CameraStatus

log = logging.getLogger(__name__)

# A camera state is re-published at least this often even when nothing changed, so a
# subscriber sees fresh fps figures; state changes are published at once.
STATE_REFRESH_S = 10.0


class ResultPipeline:
    """Turns detector results into published messages and metrics; tracks frame flow."""

    def __init__(
        self,
        *,
        node_id: str,
        run_id: str,
        cameras: Sequence[CameraConfig],
        outputs: Sequence[ResultSink],
        metrics: Metrics,
        model_name: str,
        device: str,
        snapshots: SnapshotQueue | None = None,
        latest: LatestFrames | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`snapshots` takes the snapshot jobs of cameras with snapshots on (None: no
        snapshots are rendered); `latest` keeps each camera's latest processed frame for the
        web page (None: no page); `clock` is the monotonic clock frames are stamped with
        (tests pass their own)."""
        self._clock = clock
        self._latest = latest
        self._node_id = node_id
        self._run_id = run_id
        self._outputs = tuple(outputs)
        self._metrics = metrics
        self._model_name = model_name
        self.device = device
        # Replaced whole, never changed in place: health() iterates it from the HTTP thread.
        self._cameras: dict[str, CameraOutput] = {
            camera.id: CameraOutput.create(camera, metrics=metrics, run_id=run_id)
            for camera in cameras
        }
        self.tracks = TrackOutputs(
            cameras=cameras,
            id_prefix=lambda camera_id: f"{node_id}-{camera_id}-{run_id}",
            outputs=self._outputs,
            metrics=metrics.tracks,
            snapshots=snapshots,
            on_open_tracks_changed=self.publish_state,
        )
        self.last_inference_monotonic: float | None = None
        self.frames_inferred = 0
        # Set by `begin_shutdown`: cameras stopping are not "down", and once the tracks are
        # ended no late result may open a new one.
        self._stopping = False
        self._tracks_ended = False

    # -- cameras a reload adds or removes (on the loop) ------------------------------------

    def add_camera(self, camera: CameraConfig, *, run_id: str) -> None:
        """Start handling `camera` (a reload added or restarted it); `run_id` is new, so
        its ids do not repeat those of an earlier camera with the same id in this run."""
        output = CameraOutput.create(
            camera, metrics=self._metrics, run_id=run_id, started_at=self._clock()
        )
        self._cameras = {**self._cameras, camera.id: output}
        self.tracks.add_camera(camera, id_prefix=f"{self._node_id}-{camera.id}-{run_id}")

    def remove_camera(self, camera_id: str) -> None:
        """Stop handling a camera a reload removed or restarts: its open tracks end (reason
        `reload`), and its results still in the detector and its reader's last statuses are
        ignored from now on."""
        if camera_id not in self._cameras:
            return
        self.tracks.end_all(camera_id, reason=EndReason.RELOAD)
        self.tracks.remove_camera(camera_id)
        self._cameras = {k: v for k, v in self._cameras.items() if k != camera_id}

    def replace_output(self, old: ResultSink, new: ResultSink) -> None:
        """Hand everything from now on to `new` instead of `old` (MQTT settings reloaded)."""
        self._outputs = tuple(new if sink is old else sink for sink in self._outputs)
        self.tracks.replace_output(old, new)

    # -- results (called by the scheduler for every finished batch) --------------------

    def handle_batch(self, frames: Sequence[Frame], result: BatchResult) -> None:
        metrics = self._metrics
        metrics.inference_seconds.observe(result.inference_seconds)
        metrics.batch_size.observe(len(frames))
        now = self._clock()
        self.last_inference_monotonic = now
        self.frames_inferred += len(frames)
        for frame, rows in zip(frames, result.rows, strict=True):
            output = self._cameras.get(frame.camera_id)
            if output is None or frame.capture_monotonic < output.started_at:
                continue  # a camera a reload removed or restarted since the frame was taken
            settings = output.config
            candidates = to_detections(
                rows,
                frame_width=frame.width,
                frame_height=frame.height,
                confidence_threshold=output.low_confidence,
                min_face_px=settings.min_face_px,
                roi=output.roi,
            )
            detections = candidates.at_least(settings.confidence_threshold)
            if self._latest is not None:
                self._latest.put(frame=frame, detections=detections, candidates=candidates)
            track_ids = None
            if (
                self.tracks.tracking(frame.camera_id)
                and not self._tracks_ended
                and frame.capture_monotonic > output.down_at
            ):
                track_ids = self.tracks.observe(frame=frame, detections=candidates)
            faces = len(detections)
            output.activity.update(
                faces=faces, open_tracks=self.tracks.open_tracks(frame.camera_id)
            )
            output.count_frame(detections)
            latency_s = self._clock() - frame.capture_monotonic
            output.latency.observe(latency_s)
            if not output.gate.should_publish(face_count=faces, now_monotonic=now):
                continue
            payload = faces_payload(
                node_id=self._node_id,
                run_id=output.run_id,
                camera_id=frame.camera_id,
                seq=frame.seq,
                capture_time=frame.capture_time,
                latency_ms=latency_s * 1000.0,
                frame_width=frame.width,
                frame_height=frame.height,
                model=self._model_name,
                device=self.device,
                detections=detections,
                track_ids=None if track_ids is None else track_ids[:faces],
            )
            for sink in self._outputs:
                sink.publish_faces(camera_id=frame.camera_id, payload=payload)

    def activity(self, camera_id: str) -> CameraActivity:
        """The camera's "faces in view" flag, for its reader's motion gate."""
        return self._cameras[camera_id].activity

    # -- camera status (called on the loop for every status a reader reports) ----------

    def handle_status(self, status: CameraStatus) -> None:
        output = self._cameras.get(status.camera_id)
        if output is None:
            return
        previous = output.status
        output.status = status
        if (
            status.state is not CameraState.STREAMING
            and previous is not None
            and previous.state is CameraState.STREAMING
            and not self._stopping
        ):
            output.down_at = self._clock()
            self.tracks.end_all(status.camera_id, reason=EndReason.CAMERA_DOWN)
        if previous is None or previous.state != status.state:
            _log_state(status)
        now = self._clock()
        changed = output.last_state_sent_name != status.state.value
        if changed or now - output.last_state_sent >= STATE_REFRESH_S:
            self.publish_state(status.camera_id)

    def publish_state(self, camera_id: str) -> None:
        output = self._cameras.get(camera_id)
        if output is None or output.status is None:
            return
        output.publish_state(
            self._outputs,
            sent_at=self._clock(),
            open_tracks=self.tracks.open_tracks(camera_id),
            now=datetime.now(timezone.utc),
        )

    def begin_shutdown(self) -> None:
        """The service is stopping: cameras that stop now end their tracks at `end_tracks`,
        with reason `shutdown`, not `camera_down`."""
        self._stopping = True

    def end_tracks(self) -> None:
        """At shutdown, after the last batch: an `end` event for every open track."""
        self._stopping = True
        self._tracks_ended = True
        self.tracks.end_all(None, reason=EndReason.SHUTDOWN)

    def expire_tracks(self) -> None:
        """End tracks whose cameras stopped delivering frames (called every few seconds)."""
        self.tracks.expire(now=self._clock())

    # -- flow figures --------------------------------------------------------------------

    def cameras_streaming(self) -> int:
        return sum(1 for output in self._cameras.values() if output.streaming)

    def frames_flowing(self, *, window_s: float) -> bool:
        """True when a frame went through the detector within the last `window_s`."""
        last = self.last_inference_monotonic
        return last is not None and self._clock() - last <= window_s

    def pipeline_alive(self, *, window_s: float) -> bool:
        """Whether the systemd watchdog should be fed.

        Frames flowing, or nothing to flow: with every camera down, a restart would not
        bring a camera back, and a restart loop would end in systemd's start limit with the
        service stopped for good. What a restart does fix is the wedge: cameras streaming
        while no frame gets through the detector.
        """
        return self.frames_flowing(window_s=window_s) or self.cameras_streaming() == 0

    def health(self, *, window_s: float) -> tuple[bool, dict[str, Any]]:
        cameras = {camera_id: output.state_name for camera_id, output in self._cameras.items()}
        flowing = self.frames_flowing(window_s=window_s)
        return flowing, {
            "frames_flowing": flowing,
            "cameras_streaming": self.cameras_streaming(),
            "cameras": cameras,
            "frames_inferred": self.frames_inferred,
        }

    def status_line(self) -> str:
        enabled = len(self._cameras)
        fps = sum(output.fps_to_detector for output in self._cameras.values())
        return f"{self.cameras_streaming()}/{enabled} cameras streaming, {fps:.1f} fps to detector"


def _log_state(status: CameraStatus) -> None:
    """Log a camera's new state: reconnecting is a warning, the others are news."""
    level = logging.WARNING if status.state is CameraState.RECONNECTING else logging.INFO
    log.log(
        level,
        "camera %s: %s%s",
        status.camera_id,
        status.state.value,
        f" ({status.last_error})" if status.last_error else "",
    )
