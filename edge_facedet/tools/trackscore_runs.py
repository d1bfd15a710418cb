"""Detection and tracking runs of `edge_facedet.tools.trackscore`, and their scores per rate.

The sequences are rendered at `SOURCE_FPS`; a lower rate keeps every n-th frame with its own
time, as a camera's detect grid does. Each frame is detected once and the tracker runs per
rate on the kept frames' detections, since the detector's output for a frame does not depend
on the rate.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_facedet.tools.trackscore_metrics import Hypothesis, accumulate, score
from edge_facedet.tracking.tracker import MIN_AGE_PERIODS, FaceTracker, TrackerSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.tools.trackscore_metrics import TrackScore
    from edge_facedet.tools.tracksynth import Box, FaceFinder, GroundTruthFace, SyntheticSequence

__all__ = [
    "RATES",
    "SOURCE_FPS",
    "ObservedFrame",
    "SequenceRun",
    "observe",
    "run_sequences",
    "run_tracker",
    "scores_by_rate",
    "stride_for",
]

SOURCE_FPS = 10.0
RATES = (2.0, 5.0, 10.0)
"""Detection rates scored (frames/s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedFrame:
    """One frame's ground truth and detections (the picture is not kept)."""

    index: int
    t: float
    truth: tuple[GroundTruthFace, ...]
    boxes: NDArray[np.float32]
    """(N, 4) pixels, x_min, y_min, x_max, y_max."""
    confidences: NDArray[np.float32]


def stride_for(rate: float, *, source_fps: float = SOURCE_FPS) -> int:
    """Every how many source frames a detection rate keeps one; ValueError unless exact."""
    stride = round(source_fps / rate)
    if stride < 1 or not math.isclose(source_fps / stride, rate):
        raise ValueError(f"{rate:g}/s is not {source_fps:g}/s divided by a whole number")
    return stride


def observe(
    sequence: SyntheticSequence, *, find_faces: FaceFinder, stride: int = 1
) -> list[ObservedFrame]:
    """Render every `stride`-th frame of `sequence` and detect its faces."""
    observed = []
    for index in range(0, sequence.frame_count, stride):
        frame = sequence.frame(index)
        faces = find_faces(frame.image)
        observed.append(
            ObservedFrame(
                index=index,
                t=frame.t,
                truth=frame.faces,
                boxes=faces.boxes_px,
                confidences=faces.confidences,
            )
        )
    return observed


def _as_box(row: NDArray[np.float32]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in row)
    return (x1, y1, x2, y2)


def run_tracker(
    frames: Sequence[ObservedFrame], *, settings: TrackerSettings
) -> list[tuple[Hypothesis, ...]]:
    """A fresh tracker over `frames` in order: per frame, its confirmed tracks' boxes.

    Tentative tracks are not hypotheses: the service publishes nothing for them either."""
    tracker = FaceTracker(settings=settings)
    hypotheses = []
    for frame in frames:
        step = tracker.update(boxes=frame.boxes, confidences=frame.confidences, t=frame.t)
        hypotheses.append(
            tuple(
                Hypothesis(track_id=face.track_id, box=_as_box(frame.boxes[face.detection_index]))
                for face in step.faces
                if face.confirmed
            )
        )
    return hypotheses


@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceRun:
    """One sequence detected once, tracked at each rate."""

    sequence: SyntheticSequence
    frames: tuple[ObservedFrame, ...]
    hypotheses: dict[float, list[tuple[Hypothesis, ...]]]
    """Per rate, per kept frame (the frames whose index is a multiple of its stride)."""

    def kept(self, rate: float) -> list[ObservedFrame]:
        stride = stride_for(rate, source_fps=self.sequence.fps)
        return [frame for frame in self.frames if frame.index % stride == 0]


def run_sequences(
    sequences: Sequence[SyntheticSequence],
    *,
    find_faces: FaceFinder,
    settings: TrackerSettings,
    rates: Sequence[float] = RATES,
) -> list[SequenceRun]:
    """Detect each sequence's frames once (only those some rate keeps), track at each rate."""
    runs = []
    for sequence in sequences:
        strides = [stride_for(rate, source_fps=sequence.fps) for rate in rates]
        frames = tuple(observe(sequence, find_faces=find_faces, stride=math.gcd(*strides)))
        run = SequenceRun(sequence=sequence, frames=frames, hypotheses={})
        for rate in rates:
            # As the service does (TrackerSettings.from_config): at least MIN_AGE_PERIODS.
            at_rate = dataclasses.replace(
                settings, max_age_s=max(settings.max_age_s, MIN_AGE_PERIODS / rate)
            )
            run.hypotheses[rate] = run_tracker(run.kept(rate), settings=at_rate)
        runs.append(run)
    return runs


def scores_by_rate(
    runs: Sequence[SequenceRun], *, rates: Sequence[float] = RATES
) -> dict[float, dict[str, TrackScore]]:
    """Per rate: each sequence's figures and `OVERALL`."""
    result = {}
    for rate in rates:
        accumulators = {
            run.sequence.name: accumulate(
                [frame.truth for frame in run.kept(rate)], run.hypotheses[rate]
            )
            for run in runs
        }
        result[rate] = score(accumulators)
    return result
