"""The model card's AP protocol for face-detection-0204 on WIDER FACE, rule for rule.

Owns what Open Model Zoo's accuracy checker does with the model's `accuracy-check.yml`
(`resize_prediction_boxes`, `cast_to_int`, `clip_boxes size: 1024` and
`filter height_range: 64, 1024 is_empty: True` on the annotation, then the `map` metric with
`ignore_difficult`, `include_boundaries: False`, `allow_multiple_matches_per_ignored`; its
matcher is `bbox_match` in accuracy_checker/metrics/detection.py). The rules, as the dataset's
README (`../shared/eval/wider-face-val-dev/README.md` beside the checkout) spells them out:

1. Prediction boxes, in image pixels, are rounded to integers (`np.rint`, the checker's
   default `nearest`); every prediction is kept, none is clipped.
2. Ground-truth boxes are clipped to [0, 1024]; a face whose clipped height is outside
   [64, 1024] px, or whose clipped box is empty, is *difficult*: not counted among the
   positives.
3. Predictions in descending confidence. Overlap with a counted face is IoU (width =
   x_max - x_min, no +1); with a difficult face it is intersection over the *prediction's*
   area (IoA). The best counted face is taken first; only if its IoU is below 0.5 does the
   best difficult face count. Below 0.5: false positive. Best face counted: true positive
   if not yet taken, else false positive. Best face difficult (or tied with a difficult one):
   neither, however many predictions land on it.
4. AP: area under the all-point interpolated precision/recall curve (VOC 2010+), positives =
   counted faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "GT_CLIP_SIZE",
    "IOU_THRESHOLD",
    "MAX_FACE_HEIGHT",
    "MIN_FACE_HEIGHT",
    "AveragePrecision",
    "compute_average_precision",
    "pairwise_ioa",
    "pairwise_iou",
]

MIN_FACE_HEIGHT = 64
MAX_FACE_HEIGHT = 1024
GT_CLIP_SIZE = 1024
IOU_THRESHOLD = 0.5

# What a prediction turns out to be; IGNORED ones count neither way.
_FALSE_POSITIVE, _TRUE_POSITIVE, _IGNORED = 0, 1, -1


@dataclass(frozen=True, slots=True)
class AveragePrecision:
    """The AP and the counts behind it."""

    ap: float
    """In [0, 1]; NaN when no ground-truth face counts (recall is undefined)."""
    gt_faces_counted: int
    gt_faces_ignored: int
    """Difficult faces: clipped height outside the range, or an empty clipped box."""
    true_positives: int
    false_positives: int
    detections_ignored: int
    """Detections whose best face is a difficult one: neither true nor false positives."""


# --- overlaps -----------------------------------------------------------------------------


def _intersections(first: NDArray[np.float64], second: NDArray[np.float64]) -> NDArray[np.float64]:
    top_left = np.maximum(first[:, np.newaxis, :2], second[np.newaxis, :, :2])
    bottom_right = np.minimum(first[:, np.newaxis, 2:], second[np.newaxis, :, 2:])
    intersection: NDArray[np.float64] = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    return intersection


def _areas(boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    areas: NDArray[np.float64] = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=1)
    return areas


def _as_boxes(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def pairwise_iou(
    boxes_a: NDArray[np.floating], boxes_b: NDArray[np.floating]
) -> NDArray[np.float64]:
    """(A, B) intersection over union of x_min, y_min, x_max, y_max boxes (continuous coords)."""
    first, second = _as_boxes(boxes_a), _as_boxes(boxes_b)
    intersection = _intersections(first, second)
    union = _areas(first)[:, np.newaxis] + _areas(second)[np.newaxis, :] - intersection
    iou: NDArray[np.float64] = np.divide(
        intersection, union, out=np.zeros_like(intersection), where=union > 0.0
    )
    return iou


def pairwise_ioa(
    predictions: NDArray[np.floating], faces: NDArray[np.floating]
) -> NDArray[np.float64]:
    """(P, F) intersection over the *prediction's* area; 0 for an empty prediction."""
    first, second = _as_boxes(predictions), _as_boxes(faces)
    intersection = _intersections(first, second)
    area = np.broadcast_to(_areas(first)[:, np.newaxis], intersection.shape)
    ioa: NDArray[np.float64] = np.divide(
        intersection, area, out=np.zeros_like(intersection), where=area > 0.0
    )
    return ioa


# --- matching -----------------------------------------------------------------------------


def _match_image(
    *,
    faces: NDArray[np.float64],
    difficult: NDArray[np.bool_],
    predictions: NDArray[np.float64],
    threshold: float,
) -> NDArray[np.int8]:
    """The outcome of each prediction of one image, given in descending confidence."""
    outcome = np.full(predictions.shape[0], _FALSE_POSITIVE, np.int8)
    if faces.shape[0] == 0 or predictions.shape[0] == 0:
        return outcome
    overlaps = np.where(
        difficult[np.newaxis, :], pairwise_ioa(predictions, faces), pairwise_iou(predictions, faces)
    )
    counted_best = np.max(np.where(difficult, -np.inf, overlaps), axis=1)
    difficult_best = np.max(np.where(difficult, overlaps, -np.inf), axis=1)
    # A difficult face is looked at only when no counted face reaches the threshold.
    use_difficult = (counted_best < threshold) & bool(difficult.any())
    best = np.where(use_difficult, difficult_best, counted_best)
    hits = best >= threshold
    # Every face at the best overlap is "the" best face, as in bbox_match (np.where(==max)).
    ties = overlaps == best[:, np.newaxis]
    on_difficult = hits & np.any(ties & difficult, axis=1)
    outcome[on_difficult] = _IGNORED
    taken = np.zeros(faces.shape[0], np.bool_)
    # Greedy by descending confidence: the first prediction on a counted face takes it;
    # later ones whose best face it is are duplicates, left as false positives.
    for index in np.flatnonzero(hits & ~on_difficult):
        if not np.any(ties[index] & taken):
            outcome[index] = _TRUE_POSITIVE
            taken |= ties[index]
    return outcome


def _difficult_faces(
    faces: NDArray[np.float64], *, min_height: float, max_height: float
) -> NDArray[np.bool_]:
    heights = faces[:, 3] - faces[:, 1]
    widths = faces[:, 2] - faces[:, 0]
    difficult: NDArray[np.bool_] = (
        (heights < min_height) | (heights > max_height) | (heights <= 0) | (widths <= 0)
    )
    return difficult


def compute_average_precision(
    *,
    gt_boxes: Sequence[NDArray[np.floating]],
    pred_boxes: Sequence[NDArray[np.floating]],
    pred_scores: Sequence[NDArray[np.floating]],
    min_face_height: float = MIN_FACE_HEIGHT,
    max_face_height: float = MAX_FACE_HEIGHT,
    gt_clip_size: float = GT_CLIP_SIZE,
    iou_threshold: float = IOU_THRESHOLD,
) -> AveragePrecision:
    """AP over a set of images; the three sequences are aligned per image.

    `gt_boxes[i]` (G, 4) and `pred_boxes[i]` (D, 4) are x_min, y_min, x_max, y_max in the
    original image's pixels, predictions not yet rounded; `pred_scores[i]` (D,) their
    confidences.
    """
    if not len(gt_boxes) == len(pred_boxes) == len(pred_scores):
        raise ValueError(
            f"per-image sequences differ in length: {len(gt_boxes)} ground truths, "
            f"{len(pred_boxes)} box arrays, {len(pred_scores)} score arrays"
        )
    all_scores: list[NDArray[np.float64]] = [np.zeros(0, np.float64)]
    all_outcomes: list[NDArray[np.int8]] = [np.zeros(0, np.int8)]
    counted = ignored = 0
    for image_gt, image_boxes, image_scores in zip(gt_boxes, pred_boxes, pred_scores, strict=True):
        faces = np.clip(_as_boxes(image_gt), 0.0, gt_clip_size)
        difficult = _difficult_faces(faces, min_height=min_face_height, max_height=max_face_height)
        scores = np.asarray(image_scores, dtype=np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        all_outcomes.append(
            _match_image(
                faces=faces,
                difficult=difficult,
                predictions=np.rint(_as_boxes(image_boxes)[order]),
                threshold=iou_threshold,
            )
        )
        all_scores.append(scores[order])
        counted += int(np.count_nonzero(~difficult))
        ignored += int(np.count_nonzero(difficult))
    scores, outcomes = np.concatenate(all_scores), np.concatenate(all_outcomes)
    kept = outcomes != _IGNORED
    true_positive = outcomes[kept] == _TRUE_POSITIVE
    true_positives = int(np.count_nonzero(true_positive))
    return AveragePrecision(
        ap=_all_point_ap(scores=scores[kept], true_positive=true_positive, positives=counted),
        gt_faces_counted=counted,
        gt_faces_ignored=ignored,
        true_positives=true_positives,
        false_positives=int(true_positive.size) - true_positives,
        detections_ignored=int(np.count_nonzero(~kept)),
    )


def _all_point_ap(
    *, scores: NDArray[np.float64], true_positive: NDArray[np.bool_], positives: int
) -> float:
    """Area under the precision/recall curve, precision made monotone (VOC 2010+).

    Ignored predictions are left out: in the checker they add points with the recall and
    precision of the point before them, which change neither the envelope nor the area.
    """
    if positives == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    ranked = true_positive[order]
    cumulative_tp = np.cumsum(ranked, dtype=np.float64)
    cumulative_fp = np.cumsum(~ranked, dtype=np.float64)
    recall = np.concatenate(([0.0], cumulative_tp / positives, [1.0]))
    precision = np.concatenate(
        ([0.0], cumulative_tp / np.maximum(cumulative_tp + cumulative_fp, 1.0), [0.0])
    )
    # Interpolated precision at recall r: the best precision at any recall >= r.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))
