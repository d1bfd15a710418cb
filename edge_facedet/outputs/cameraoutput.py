"""One camera's output side in the result pipeline (outputs/pipeline.py).

What the pipeline keeps per camera: its thresholds and filters, its publish gate, its metric
series, the "faces in view" flag its motion gate reads, its latest status and when its state
was last published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_facedet.outputs.payloads import PublishGate, camera_state_payload
from edge_facedet.sources.activity import CameraActivity
from edge_facedet.sources.status import CameraState

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from prometheus_client import Counter, Histogram

    from edge_facedet.config import CameraConfig
    from edge_facedet.frames import Detections
    from edge_facedet.outputs.base import ResultSink
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.sources.status import CameraStatus

__all__ = ["CameraOutput"]


@dataclass(slots=True)
class CameraOutput:
    """One camera's output side; see the module docstring."""

    config: CameraConfig
    gate: PublishGate
    roi: tuple[float, float, float, float] | None
    # The camera's metric series, resolved once (`labels()` per frame showed in profiles).
    inferred: Counter
    faces: Counter
    latency: Histogram
    face_height: Histogram
    face_confidence: Histogram
    low_confidence: float
    """Detections from here down to confidence_threshold only feed the tracker."""
    activity: CameraActivity
    """Faces in view, for the camera's motion gate (read by its reader thread)."""
    run_id: str
    """Part of the camera's faces `event_id`s: the service's, or a new one for a camera a
    reload (re)started, whose reader counts `seq` from 0 again."""
    started_at: float = float("-inf")
    """When a reload (re)started the camera (monotonic): frames of its previous reader still
    in the detector then are not published under the new run id."""
    status: CameraStatus | None = None
    down_at: float = float("-inf")
    """When the camera last went down (monotonic): results of frames captured before it that
    are still in the detector then must not open tracks after their `end`."""
    last_state_sent: float = float("-inf")
    last_state_sent_name: str | None = None

    @classmethod
    def create(
        cls,
        camera: CameraConfig,
        *,
        metrics: Metrics,
        run_id: str,
        started_at: float = float("-inf"),
    ) -> CameraOutput:
        roi = camera.roi
        return cls(
            config=camera,
            gate=PublishGate(config=camera.publish),
            roi=(roi.x_min, roi.y_min, roi.x_max, roi.y_max) if roi else None,
            inferred=metrics.frames_inferred.labels(camera=camera.id),
            faces=metrics.faces_detected.labels(camera=camera.id),
            latency=metrics.pipeline_latency_seconds.labels(camera=camera.id),
            face_height=metrics.tracks.face_height.labels(camera=camera.id),
            face_confidence=metrics.tracks.face_confidence.labels(camera=camera.id),
            low_confidence=min(camera.confidence_threshold, camera.tracking.low_confidence)
            if camera.tracking.enabled
            else camera.confidence_threshold,
            activity=CameraActivity(),
            run_id=run_id,
            started_at=started_at,
        )

    def count_frame(self, detections: Detections) -> None:
        """The frame's metrics, but for its latency: inferred, its faces, their sizes."""
        self.inferred.inc()
        faces = len(detections)
        if not faces:
            return
        self.faces.inc(faces)
        boxes = detections.boxes_px
        for height, confidence in zip(
            (boxes[:, 3] - boxes[:, 1]).tolist(), detections.confidences.tolist(), strict=True
        ):
            self.face_height.observe(height)
            self.face_confidence.observe(confidence)

    @property
    def streaming(self) -> bool:
        return self.status is not None and self.status.state is CameraState.STREAMING

    @property
    def fps_to_detector(self) -> float:
        """The rate the reader hands frames to the detector at; 0 unless streaming."""
        status = self.status
        return status.fps_out if status is not None and self.streaming else 0.0

    @property
    def state_name(self) -> str:
        """The latest status's state, or "starting" before the reader reported one."""
        return self.status.state.value if self.status else "starting"

    def publish_state(
        self, sinks: Iterable[ResultSink], *, open_tracks: int, sent_at: float, now: datetime
    ) -> None:
        """Hand the camera's state to `sinks`, noted as sent at `sent_at` (monotonic); nothing
        before the reader reported a status."""
        status = self.status
        if status is None:
            return
        self.last_state_sent = sent_at
        self.last_state_sent_name = status.state.value
        payload = camera_state_payload(
            camera_id=self.config.id,
            state=status.state.value,
            fps_in=status.fps_in,
            fps_out=status.fps_out,
            last_error=status.last_error,
            reconnects=status.reconnects,
            frame_width=status.frame_width,
            frame_height=status.frame_height,
            open_tracks=open_tracks,
            now=now,
        )
        for sink in sinks:
            sink.set_camera_state(camera_id=self.config.id, payload=payload)
