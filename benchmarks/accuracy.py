"""Accuracy on video for every way of reading a stream: what each loses against a reference.

The reference is the detector on every frame of a clip, decoded in full by PyAV, converted to
full-size BGR as a snapshot is (`PyAvPicture.to_bgr`) and resized to the network input with
OpenCV's INTER_LINEAR, as the `opencv` decoder resizes. Each way of reading is then run with
the service's own classes (`open_source`, `DetectGrid`, `MotionGate`, `FaceTracker`,
`CameraActivity`) at detect_fps 5, and scored on one grid for all: the due frames of the
full-frame clock. What a reading reports at a due frame is the latest frame it detected at or
before it: a frame it skipped (a non-keyframe, a gated frame) is "no change" to a consumer,
as the publish policy sees it.

Per reading: the share of reference faces (confidence >= the threshold) matched one to one by
a reported face with IoU >= 0.5 at the same due frame, the reported faces left unmatched per
due frame, the share of due frames it detected, and per reference face track (the tracker
over the reference's every frame) the delay from its first reference detection to the first
due frame where the reading reports it.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np

from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.frames import Detections
from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.postprocess import to_detections
from edge_facedet.sources.activity import CameraActivity
from edge_facedet.sources.decoders import open_source
from edge_facedet.sources.gate import GateSettings, MotionGate, Verdict
from edge_facedet.sources.grid import DetectGrid
from edge_facedet.sources.motion import MotionDetector
from edge_facedet.sources.pyav import PyAvPicture
from edge_facedet.sources.source import DecodeOptions, Decoder
from edge_facedet.tracking.tracker import FaceTracker, TrackerSettings

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from numpy.typing import NDArray

    from edge_facedet.sources.source import VideoSource

__all__ = [
    "READINGS",
    "ClipReference",
    "FrameDetector",
    "Reading",
    "Score",
    "evaluate_clip",
    "false_motion",
    "match_count",
    "reference",
    "score",
]

THRESHOLD = 0.5
"""The service's default confidence_threshold: what counts as a reported (and reference) face."""
MATCH_IOU = 0.5
DETECT_FPS = 5.0
TRACKING = TrackingConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One way of reading a camera: decoder settings, which clip, whether motion gates it."""

    name: str
    options: DecodeOptions = field(default_factory=DecodeOptions)
    substream: bool = False
    """Read the clip's 640x360 camera-like re-encode instead of the clip itself."""
    gated: bool = False


READINGS = (
    Reading(name="opencv"),
    Reading(name="pyav", options=DecodeOptions(decoder=Decoder.PYAV)),
    Reading(
        name="pyav, skip_loop_filter",
        options=DecodeOptions(decoder=Decoder.PYAV, skip_loop_filter=True),
    ),
    Reading(
        name="pyav, keyframes_only",
        options=DecodeOptions(decoder=Decoder.PYAV, keyframes_only=True),
    ),
    Reading(name="640x360 substream", substream=True),
    Reading(name="motion gating", gated=True),
    Reading(name="640x360 substream, motion gating", substream=True, gated=True),
)


class FrameDetector:
    """The service's detector one network-input image at a time, on a private event loop.

    Returns every candidate down to the tracker's low confidence, boxes normalised; callers
    take `at_least(THRESHOLD)` for what the service reports.
    """

    def __init__(self, *, model_xml: Path, cache_dir: Path | None = None) -> None:
        self._detector = OpenVinoDetector(
            model_xml=model_xml, device="CPU", performance_hint="LATENCY", cache_dir=cache_dir
        )
        self._loop = asyncio.new_event_loop()
        self.frames = 0

    @property
    def input_size(self) -> tuple[int, int]:
        return self._detector.input_size

    def __call__(self, image: NDArray[np.uint8], *, width: int, height: int) -> Detections:
        result = self._loop.run_until_complete(self._detector.detect([image]))
        self.frames += 1
        return to_detections(
            result.rows[0],
            frame_width=width,
            frame_height=height,
            confidence_threshold=min(THRESHOLD, TRACKING.low_confidence),
        )

    def close(self) -> None:
        self._detector.wait_idle()
        self._loop.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipReference:
    """The detector's candidates on every frame of a clip, and each frame's clock."""

    clocks: NDArray[np.float64]
    """Seconds from the first frame, per frame in presentation order."""
    faces: list[Detections]

    @property
    def fps(self) -> float:
        return (len(self.clocks) - 1) / float(self.clocks[-1]) if len(self.clocks) > 1 else 0.0

    def index_at(self, clock_s: float) -> int:
        """The frame shown at `clock_s` (the nearest clock)."""
        return int(np.argmin(np.abs(self.clocks - clock_s)))


def reference(*, clip: Path, detector: FrameDetector) -> ClipReference:
    """Every frame: a full PyAV decode, full-size BGR, INTER_LINEAR to the network input."""
    clocks: list[float] = []
    faces: list[Detections] = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        first: float | None = None
        for frame in container.decode(stream):
            time_s = float(frame.time or 0.0)
            first = time_s if first is None else first
            image = PyAvPicture(frame=frame).to_bgr()
            resized = np.asarray(
                cv2.resize(image, detector.input_size, interpolation=cv2.INTER_LINEAR), np.uint8
            )
            clocks.append(time_s - first)
            faces.append(detector(resized, width=image.shape[1], height=image.shape[0]))
    return ClipReference(clocks=np.asarray(clocks, np.float64), faces=faces)


def due_frames(ref: ClipReference) -> list[int]:
    """The frames due at detect_fps 5 on the full-frame clock: the grid every reading is
    scored on."""
    grid = DetectGrid(detect_fps=DETECT_FPS)
    return [index for index, clock in enumerate(ref.clocks) if grid.is_due(float(clock))]


@dataclass(slots=True)
class GateRun:
    """One camera's motion gate as the service wires it: the gate decides on each due frame,
    and each sent frame's detections drive the tracker and the camera's activity flag."""

    gate: MotionGate
    activity: CameraActivity
    tracker: FaceTracker
    verdicts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls) -> GateRun:
        activity = CameraActivity()
        return cls(
            gate=MotionGate(settings=GateSettings(), activity=activity, detect_fps=DETECT_FPS),
            activity=activity,
            tracker=FaceTracker(
                settings=TrackerSettings.from_config(
                    confidence_threshold=THRESHOLD, tracking=TRACKING, detect_fps=DETECT_FPS
                )
            ),
        )

    def decide(self, *, source: VideoSource, clock_s: float) -> Verdict:
        verdict = self.gate.decide(source=source, clock_s=clock_s)
        self.verdicts[verdict.value] = self.verdicts.get(verdict.value, 0) + 1
        return verdict

    def sent(self, *, faces: Detections, clock_s: float) -> None:
        self.gate.sent(clock_s=clock_s)
        self.tracker.update(boxes=faces.boxes_px, confidences=faces.confidences, t=clock_s)
        self.activity.update(
            faces=len(faces.at_least(THRESHOLD)), open_tracks=len(self.tracker.open_confirmed)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingRun:
    """What one reading detected: frame index -> candidates, for the frames it detected."""

    detected: dict[int, Detections]
    verdicts: dict[str, int] = field(default_factory=dict)


def read(
    *, clip: Path, reading: Reading, ref: ClipReference, detector: FrameDetector
) -> ReadingRun:
    """Read `clip` as `reading` says, through the service's source, grid and gate."""
    source = open_source(
        url=str(clip), is_device=False, options=reading.options, open_timeout_s=30.0,
        read_timeout_s=30.0, stall_timeout_s=30.0,
    )  # fmt: skip
    grid = DetectGrid(detect_fps=DETECT_FPS)
    gate = GateRun.start() if reading.gated else None
    detected: dict[int, Detections] = {}
    try:
        for index in _frame_indices(source=source, reading=reading, ref=ref):
            clock_s = float(ref.clocks[index])
            if not grid.is_due(clock_s):
                continue
            if gate is not None and not gate.decide(source=source, clock_s=clock_s).sends:
                continue
            image, width, height = source.retrieve(size=detector.input_size)
            faces = detector(image, width=width, height=height)
            detected[index] = faces
            if gate is not None:
                gate.sent(faces=faces, clock_s=clock_s)
    finally:
        source.release()
    return ReadingRun(detected=detected, verdicts=gate.verdicts if gate else {})


def _frame_indices(*, source: VideoSource, reading: Reading, ref: ClipReference) -> Iterator[int]:
    """Each grabbed frame's index in the reference: counted for full decodes, from its
    timestamp for keyframes_only (the frames between are never decoded)."""
    count = 0
    first: float | None = None
    while source.grab():
        if reading.options.keyframes_only:
            time_s = source.stream_time_s()
            first = time_s if first is None else first
            yield ref.index_at(time_s - first)
        elif count < len(ref.clocks):
            yield count
        count += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """One reading on one clip, against the reference on the due frames."""

    reference_faces: int
    matched: int
    extra: int
    due_frames: int
    detected_frames: int
    tracks: int
    """Reference face tracks seen at a due frame at least once."""
    delays_ms: tuple[float, ...]
    """Per track found: first reported due frame minus its first reference detection."""
    never_reported: int

    @property
    def recall(self) -> float:
        return self.matched / self.reference_faces if self.reference_faces else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference_faces": self.reference_faces,
            "matched": self.matched,
            "recall": round(self.recall, 4),
            "extra": self.extra,
            "extra_per_frame": round(self.extra / max(self.due_frames, 1), 4),
            "due_frames": self.due_frames,
            "detected_frames": self.detected_frames,
            "tracks": self.tracks,
            "never_reported": self.never_reported,
            "delays_ms": [round(d, 1) for d in self.delays_ms],
        }


def iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    """(N, M) IoU of xyxy boxes."""
    a64 = np.asarray(a, np.float64).reshape(-1, 1, 4)
    b64 = np.asarray(b, np.float64).reshape(1, -1, 4)
    low = np.maximum(a64[..., :2], b64[..., :2])
    high = np.minimum(a64[..., 2:], b64[..., 2:])
    width = np.clip(high[..., 0] - low[..., 0], 0.0, None)
    height = np.clip(high[..., 1] - low[..., 1], 0.0, None)
    inter = width * height
    area_a = (a64[..., 2] - a64[..., 0]) * (a64[..., 3] - a64[..., 1])
    area_b = (b64[..., 2] - b64[..., 0]) * (b64[..., 3] - b64[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_count(truth: NDArray[np.float32], found: NDArray[np.float32]) -> int:
    """Faces of `truth` matched one to one by `found` at IoU >= 0.5, best overlaps first."""
    if not len(truth) or not len(found):
        return 0
    overlaps = iou(truth, found)
    matched = 0
    while True:
        row, column = np.unravel_index(int(np.argmax(overlaps)), overlaps.shape)
        if overlaps[row, column] < MATCH_IOU:
            return matched
        matched += 1
        overlaps[row, :] = -1.0
        overlaps[:, column] = -1.0


def reference_tracks(ref: ClipReference) -> dict[int, dict[int, NDArray[np.float32]]]:
    """Track id -> {frame index: normalised box at or above the threshold}: the reference's
    faces linked over every frame by the service's tracker (confirmed tracks only)."""
    tracker = FaceTracker(
        settings=TrackerSettings.from_config(
            confidence_threshold=THRESHOLD, tracking=TRACKING, detect_fps=max(ref.fps, 1.0)
        )
    )
    tracks: dict[int, dict[int, NDArray[np.float32]]] = {}
    confirmed: set[int] = set()
    for index, faces in enumerate(ref.faces):
        step = tracker.update(
            boxes=faces.boxes_px, confidences=faces.confidences, t=float(ref.clocks[index])
        )
        for face in step.faces:
            if face.confirmed:
                confirmed.add(face.track_id)
            if faces.confidences[face.detection_index] >= THRESHOLD:
                boxes = tracks.setdefault(face.track_id, {})
                boxes[index] = faces.boxes_norm[face.detection_index]
    return {track_id: boxes for track_id, boxes in tracks.items() if track_id in confirmed}


def held(detected: dict[int, Detections], frames: Sequence[int]) -> dict[int, NDArray[np.float32]]:
    """Per due frame, the reported boxes (normalised, at or above the threshold) of the latest
    frame detected at or before it: a skipped frame is "no change"."""
    shown: dict[int, NDArray[np.float32]] = {}
    latest = np.zeros((0, 4), np.float32)
    order = sorted(detected)
    position = 0
    for frame in frames:
        while position < len(order) and order[position] <= frame:
            latest = detected[order[position]].at_least(THRESHOLD).boxes_norm
            position += 1
        shown[frame] = latest
    return shown


def score(*, ref: ClipReference, detected: dict[int, Detections]) -> Score:
    """`detected` (frame index -> candidates) scored against `ref` on the due frames."""
    frames = due_frames(ref)
    shown = held(detected, frames)
    faces = matched = extra = 0
    for frame in frames:
        truth = ref.faces[frame].at_least(THRESHOLD).boxes_norm
        found = match_count(truth, shown[frame])
        faces += len(truth)
        matched += found
        extra += len(shown[frame]) - found
    delays: list[float] = []
    never = tracks_seen = 0
    due = set(frames)
    for boxes in reference_tracks(ref).values():
        on_grid = [frame for frame in sorted(boxes) if frame in due]
        if not on_grid:
            continue
        tracks_seen += 1
        first_s = float(ref.clocks[min(boxes)])
        reported = next(
            (f for f in on_grid if match_count(boxes[f][np.newaxis], shown[f]) > 0), None
        )
        if reported is None:
            never += 1
        else:
            delays.append(1000.0 * (float(ref.clocks[reported]) - first_s))
    return Score(
        reference_faces=faces,
        matched=matched,
        extra=extra,
        due_frames=len(frames),
        detected_frames=len(detected),
        tracks=tracks_seen,
        delays_ms=tuple(delays),
        never_reported=never,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between ranks; NaN without values."""
    if not values:
        return math.nan
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1])


def evaluate_clip(
    *, clip: Path, substream: Path, detector: FrameDetector, readings: Sequence[Reading] = READINGS
) -> dict[str, Any]:
    """Every reading of one clip, scored; the reference's own figures beside them."""
    ref = reference(clip=clip, detector=detector)
    rows: dict[str, Any] = {}
    for reading in readings:
        run = read(
            clip=substream if reading.substream else clip, reading=reading, ref=ref,
            detector=detector,
        )  # fmt: skip
        rows[reading.name] = {**score(ref=ref, detected=run.detected).as_dict(),
                              "verdicts": run.verdicts}  # fmt: skip
    return {
        "clip": clip.name,
        "frames": len(ref.faces),
        "fps": round(ref.fps, 3),
        "seconds": round(float(ref.clocks[-1]), 2) if len(ref.clocks) else 0.0,
        "frames_with_faces": sum(1 for f in ref.faces if len(f.at_least(THRESHOLD))),
        "readings": rows,
    }


def summarise(clips: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per reading over all clips: pooled recall and extras, delay percentiles, gate savings."""
    names = list(clips[0]["readings"]) if clips else []
    rows: dict[str, Any] = {}
    for name in names:
        runs = [clip["readings"][name] for clip in clips]
        faces = sum(r["reference_faces"] for r in runs)
        due = sum(r["due_frames"] for r in runs)
        delays = [d for r in runs for d in r["delays_ms"]]
        rows[name] = {
            "recall": round(sum(r["matched"] for r in runs) / faces, 4) if faces else math.nan,
            "extra_per_frame": round(sum(r["extra"] for r in runs) / max(due, 1), 4),
            "detected_share": round(sum(r["detected_frames"] for r in runs) / max(due, 1), 4),
            "tracks": sum(r["tracks"] for r in runs),
            "never_reported": sum(r["never_reported"] for r in runs),
            "delay_p50_ms": round(percentile(delays, 50), 1),
            "delay_p95_ms": round(percentile(delays, 95), 1),
            "delay_max_ms": round(max(delays), 1) if delays else math.nan,
        }
    return rows


def false_motion(*, clip: Path, until_s: float) -> dict[str, Any]:
    """Motion reported on the due frames of a still stretch of `clip` (its first `until_s`
    seconds), after the first (calibration): the motion detector alone, default settings,
    the `opencv` decoder's small grey picture."""
    source = open_source(
        url=str(clip), is_device=False, options=DecodeOptions(), open_timeout_s=30.0,
        read_timeout_s=30.0, stall_timeout_s=30.0,
    )  # fmt: skip
    settings = GateSettings().motion
    detector = MotionDetector(settings=settings, frame_interval_s=1.0 / DETECT_FPS)
    grid = DetectGrid(detect_fps=DETECT_FPS)
    results = []
    try:
        fps = source.fps()
        index = 0
        while source.grab() and index / fps < until_s:
            if grid.is_due(index / fps):
                results.append(detector.detect(source.gray(height=settings.height_px)))
            index += 1
    finally:
        source.release()
    counted = results[1:]
    fired = sum(result.motion for result in counted)
    return {
        "clip": clip.name,
        "seconds": until_s,
        "due_frames": len(counted),
        "motion_frames": fired,
        "share": round(fired / len(counted), 4) if counted else math.nan,
        "max_changed": round(max((r.changed for r in counted), default=0.0), 5),
    }
