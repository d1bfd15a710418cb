"""What happens to a batch's results and to camera status changes, on the event loop.

Owns the per-camera output side: thresholds and filters (post-processing), the publish
policy, the faces and state payloads handed to every output (base.py's `ResultSink`), the
per-frame metrics, and the flow figures that health, the systemd watchdog and STATUS= are
computed from.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from edge_facedet.inference.postprocess import to_detections
from edge_facedet.outputs.payloads import PublishGate, camera_state_payload, faces_payload
from edge_facedet.sources.status import CameraState, CameraStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from prometheus_client import Counter, Histogram

    from edge_facedet.config import CameraConfig
    from edge_facedet.frames import Frame
    from edge_facedet.inference.detector import BatchResult
    from edge_facedet.outputs.base import ResultSink
    from edge_facedet.outputs.metrics import Metrics

log = logging.getLogger(__name__)

# A camera state is re-published at least this often even when nothing changed, so a
# subscriber sees fresh fps figures; state changes are published at once.
STATE_REFRESH_S = 10.0


@dataclass(slots=True)
class _CameraOutput:
    config: CameraConfig
    gate: PublishGate
    roi: tuple[float, float, float, float] | None
    # The camera's metric series, resolved once (`labels()` per frame showed in profiles).
    inferred: Counter
    faces: Counter
    latency: Histogram
    status: CameraStatus | None = None
    last_state_sent: float = float("-inf")
    last_state_sent_name: str | None = None


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # `clock` is the monotonic clock frames are stamped with; tests pass their own.
        self._clock = clock
        self._node_id = node_id
        self._run_id = run_id
        self._outputs = tuple(outputs)
        self._metrics = metrics
        self._model_name = model_name
        self.device = device
        self._cameras: dict[str, _CameraOutput] = {}
        for camera in cameras:
            roi = camera.roi
            self._cameras[camera.id] = _CameraOutput(
                config=camera,
                gate=PublishGate(config=camera.publish),
                roi=(roi.x_min, roi.y_min, roi.x_max, roi.y_max) if roi else None,
                inferred=metrics.frames_inferred.labels(camera=camera.id),
                faces=metrics.faces_detected.labels(camera=camera.id),
                latency=metrics.pipeline_latency_seconds.labels(camera=camera.id),
            )
        self.last_inference_monotonic: float | None = None
        self.frames_inferred = 0

    # -- results (called by the scheduler for every finished batch) --------------------

    def handle_batch(self, frames: Sequence[Frame], result: BatchResult) -> None:
        metrics = self._metrics
        metrics.inference_seconds.observe(result.inference_seconds)
        metrics.batch_size.observe(len(frames))
        now = self._clock()
        self.last_inference_monotonic = now
        self.frames_inferred += len(frames)
        for frame, rows in zip(frames, result.rows, strict=True):
            output = self._cameras[frame.camera_id]
            settings = output.config
            detections = to_detections(
                rows,
                frame_width=frame.width,
                frame_height=frame.height,
                confidence_threshold=settings.confidence_threshold,
                min_face_px=settings.min_face_px,
                roi=output.roi,
            )
            faces = len(detections)
            output.inferred.inc()
            if faces:
                output.faces.inc(faces)
            latency_s = self._clock() - frame.capture_monotonic
            output.latency.observe(latency_s)
            if not output.gate.should_publish(face_count=faces, now_monotonic=now):
                continue
            payload = faces_payload(
                node_id=self._node_id,
                run_id=self._run_id,
                camera_id=frame.camera_id,
                seq=frame.seq,
                capture_time=frame.capture_time,
                latency_ms=latency_s * 1000.0,
                frame_width=frame.width,
                frame_height=frame.height,
                model=self._model_name,
                device=self.device,
                detections=detections,
            )
            for sink in self._outputs:
                sink.publish_faces(camera_id=frame.camera_id, payload=payload)

    # -- camera status (called on the loop for every status a reader reports) ----------

    def handle_status(self, status: CameraStatus) -> None:
        output = self._cameras.get(status.camera_id)
        if output is None:
            return
        previous = output.status
        output.status = status
        if previous is None or previous.state != status.state:
            level = logging.WARNING if status.state is CameraState.RECONNECTING else logging.INFO
            log.log(
                level,
                "camera %s: %s%s",
                status.camera_id,
                status.state.value,
                f" ({status.last_error})" if status.last_error else "",
            )
        now = self._clock()
        changed = output.last_state_sent_name != status.state.value
        if changed or now - output.last_state_sent >= STATE_REFRESH_S:
            self.publish_state(status.camera_id)

    def publish_state(self, camera_id: str) -> None:
        output = self._cameras[camera_id]
        status = output.status
        if status is None:
            return
        output.last_state_sent = self._clock()
        output.last_state_sent_name = status.state.value
        payload = camera_state_payload(
            camera_id=camera_id,
            state=status.state.value,
            fps_in=status.fps_in,
            fps_out=status.fps_out,
            last_error=status.last_error,
            reconnects=status.reconnects,
            frame_width=status.frame_width,
            frame_height=status.frame_height,
            now=datetime.now(timezone.utc),
        )
        for sink in self._outputs:
            sink.set_camera_state(camera_id=camera_id, payload=payload)

    # -- flow figures --------------------------------------------------------------------

    def cameras_streaming(self) -> int:
        return sum(
            1
            for output in self._cameras.values()
            if output.status is not None and output.status.state is CameraState.STREAMING
        )

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
        cameras = {
            camera_id: (output.status.state.value if output.status else "starting")
            for camera_id, output in self._cameras.items()
        }
        flowing = self.frames_flowing(window_s=window_s)
        return flowing, {
            "frames_flowing": flowing,
            "cameras_streaming": self.cameras_streaming(),
            "cameras": cameras,
            "frames_inferred": self.frames_inferred,
        }

    def status_line(self) -> str:
        enabled = len(self._cameras)
        fps = sum(
            output.status.fps_out
            for output in self._cameras.values()
            if output.status is not None and output.status.state is CameraState.STREAMING
        )
        return f"{self.cameras_streaming()}/{enabled} cameras streaming, {fps:.1f} fps to detector"
