"""The MOT scoring of `edge_facedet.tools.trackscore`: ground truth against hypotheses.

motmetrics 1.4's own IoU helper calls `np.asfarray`, which numpy 2 removed, so the distance
matrix is built here (`iou_distances`) and only its accumulator and metrics are used. Faces
too hidden to count are "don't care" (MOT's distractor rule, `without_dont_care`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import motmetrics as mm  # type: ignore[import-untyped]
import numpy as np

from edge_facedet.tracking.assignment import linear_sum_assignment

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import NDArray

    from edge_facedet.tools.tracksynth import Box, GroundTruthFace

__all__ = [
    "MAX_IOU_DISTANCE",
    "OVERALL",
    "Hypothesis",
    "TrackScore",
    "accumulate",
    "iou_distances",
    "score",
    "without_dont_care",
]

MAX_IOU_DISTANCE = 0.5
"""A hypothesis matches a ground-truth face only with IoU >= 0.5 (the MOT challenge's rule)."""
METRICS = (
    "mota",
    "idf1",
    "num_switches",
    "precision",
    "recall",
    "num_frames",
    "num_objects",
    "num_false_positives",
    "num_misses",
)
OVERALL = "OVERALL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Hypothesis:
    """A confirmed track's box in one frame."""

    track_id: int
    box: Box


def iou_distances(
    truth: NDArray[np.float64], hypotheses: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(N, M) 1 - IoU of xyxy boxes; NaN (no match allowed) above `MAX_IOU_DISTANCE`."""
    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    hypotheses = np.asarray(hypotheses, np.float64).reshape(-1, 4)
    t, h = truth[:, None, :], hypotheses[None, :, :]
    inter_w = np.clip(np.minimum(t[..., 2], h[..., 2]) - np.maximum(t[..., 0], h[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(t[..., 3], h[..., 3]) - np.maximum(t[..., 1], h[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_t = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    area_h = (h[..., 2] - h[..., 0]) * (h[..., 3] - h[..., 1])
    union = area_t + area_h - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    distance: NDArray[np.float64] = 1.0 - iou
    distance[distance > MAX_IOU_DISTANCE] = np.nan
    return distance


def _boxes(items: Sequence[GroundTruthFace] | Sequence[Hypothesis]) -> NDArray[np.float64]:
    return np.array([item.box for item in items], np.float64).reshape(-1, 4)


def without_dont_care(
    faces: Sequence[GroundTruthFace], hypotheses: Sequence[Hypothesis]
) -> list[Hypothesis]:
    """The hypotheses left once those taken by a "don't care" face are removed.

    MOT's distractor rule, as py-motmetrics applies it to MOT16: every face, counted or not,
    is assigned to the hypotheses (Hungarian on IoU distance, matches up to
    `MAX_IOU_DISTANCE`); a hypothesis assigned to a face too hidden to count is neither a hit
    nor a false positive, so it is dropped."""
    if not hypotheses or all(face.counted for face in faces):
        return list(hypotheses)
    distances = iou_distances(_boxes(faces), _boxes(hypotheses))
    rows, cols = linear_sum_assignment(np.where(np.isnan(distances), 1e6, distances))
    dropped = {
        int(c)
        for r, c in zip(rows, cols, strict=True)
        if not np.isnan(distances[r, c]) and not faces[r].counted
    }
    return [hyp for i, hyp in enumerate(hypotheses) if i not in dropped]


def accumulate(
    truth: Sequence[Sequence[GroundTruthFace]], hypotheses: Sequence[Sequence[Hypothesis]]
) -> Any:
    """A `motmetrics.MOTAccumulator` (untyped, hence Any) over frames: ground truth and
    hypotheses, frame by frame; faces too hidden to count are "don't care"."""
    if len(truth) != len(hypotheses):
        raise ValueError(f"{len(truth)} frames of truth but {len(hypotheses)} of hypotheses")
    acc = mm.MOTAccumulator(auto_id=True)
    for faces, hyps in zip(truth, hypotheses, strict=True):
        kept = without_dont_care(faces, hyps)
        counted = [face for face in faces if face.counted]
        distances = iou_distances(_boxes(counted), _boxes(kept))
        acc.update([face.gt_id for face in counted], [hyp.track_id for hyp in kept], distances)
    return acc


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackScore:
    """The MOT figures of one sequence at one rate (or of several together)."""

    mota: float
    idf1: float
    id_switches: int
    precision: float
    recall: float
    frames: int
    gt_boxes: int
    false_positives: int
    misses: int


def _number(value: Any) -> float:
    """A pandas scalar as a float; NaN stays NaN (no hypotheses: precision is 0/0)."""
    number = float(value)
    return number if math.isfinite(number) else math.nan


def score(accumulators: Mapping[str, Any]) -> dict[str, TrackScore]:
    """Each accumulator's figures, and `OVERALL` for all of them pooled."""
    summary = mm.metrics.create().compute_many(
        list(accumulators.values()),
        metrics=list(METRICS),
        names=list(accumulators),
        generate_overall=True,
    )
    scores = {}
    for name in [*accumulators, OVERALL]:
        row = summary.loc[name]
        scores[name] = TrackScore(
            mota=_number(row["mota"]),
            idf1=_number(row["idf1"]),
            id_switches=int(row["num_switches"]),
            precision=_number(row["precision"]),
            recall=_number(row["recall"]),
            frames=int(row["num_frames"]),
            gt_boxes=int(row["num_objects"]),
            false_positives=int(row["num_false_positives"]),
            misses=int(row["num_misses"]),
        )
    return scores
