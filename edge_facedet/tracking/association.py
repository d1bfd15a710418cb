"""Which track goes with which detection: overlap, centre distance, optimal assignment.

Rows are tracks (their predicted boxes), columns detections; boxes are x_min, y_min, x_max,
y_max. Pairs outside a gate are excluded before the assignment rather than dropped after
it, so a pair that cannot be accepted never pushes another row off its valid match.
Empty inputs give empty matches: a camera often has no face.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from edge_facedet.tracking.assignment import linear_sum_assignment

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Matches", "centre_distance_matrix", "iou_matrix", "match", "match_nearest"]

_EPS = 1e-12


class Matches(NamedTuple):
    pairs: tuple[tuple[int, int], ...]
    """(row, column), ascending by row."""
    unmatched_rows: tuple[int, ...]
    unmatched_cols: tuple[int, ...]


def iou_matrix(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Intersection over union of every box of `a` (N, 4) with every box of `b` (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    # Corners as (N, M, 2) pairs and sizes as (K, 2): the fewest numpy calls at the few
    # boxes a camera has, where each call's overhead costs more than its arithmetic (this
    # runs for every processed frame).
    overlap = np.maximum(
        np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]),
        0.0,
    )
    intersection = overlap[:, :, 0] * overlap[:, :, 1]
    size_a = np.maximum(a[:, 2:] - a[:, :2], 0.0)
    size_b = np.maximum(b[:, 2:] - b[:, :2], 0.0)
    union = (size_a[:, 0] * size_a[:, 1])[:, None] + size_b[:, 0] * size_b[:, 1] - intersection
    # Degenerate boxes have no area: their IoU is 0, not 0/0.
    return np.asarray(intersection / np.maximum(union, _EPS), dtype=np.float64)


def centre_distance_matrix(
    tracks: NDArray[np.floating], detections: NDArray[np.floating], *, max_size_ratio: float
) -> NDArray[np.float64]:
    """Centre distance of each detection from each track, in the track box's own sizes.

    x is measured in track widths, y in track heights, so the same number means the same for
    a near face and a far one. A pair whose boxes differ in size by more than
    `max_size_ratio` (either side, in width or height) is `inf`: a different face.
    """
    t = np.asarray(tracks, dtype=np.float64).reshape(-1, 4)
    d = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    t_size = np.maximum(t[:, 2:] - t[:, :2], _EPS)
    d_size = np.maximum(d[:, 2:] - d[:, :2], _EPS)
    offset = ((d[None, :, :2] + d[None, :, 2:]) - (t[:, None, :2] + t[:, None, 2:])) / 2
    distance = np.hypot(*np.moveaxis(offset / t_size[:, None, :], 2, 0))
    ratio = d_size[None, :, :] / t_size[:, None, :]
    similar = np.all((ratio <= max_size_ratio) & (ratio >= 1 / max_size_ratio), axis=2)
    return np.where(similar, distance, np.inf)


def _assign(margin: NDArray[np.float64], *, valid: NDArray[np.bool_]) -> Matches:
    """The valid pairs that maximise the total margin by which they pass their gate.

    Leaving a row and a column apart scores 0, the same as an invalid pair, so an accepted
    pair must earn its place (lapjv's `cost_limit` in ByteTrack, as an assignment).
    """
    rows_n, cols_n = margin.shape
    pairs: list[tuple[int, int]] = []
    rows, cols = np.nonzero(valid)
    if rows.size and _one_to_one(rows, cols):
        # Each row and each column in at most one valid pair, as faces apart from each other
        # nearly always are: taking all of them is the optimum, found without the solver.
        # nonzero() lists them by row, as the solver does.
        pairs = list(zip(rows.tolist(), cols.tolist(), strict=True))
    elif rows.size:
        # A pair exactly at its gate is valid: a tiny bonus keeps it ahead of no pair.
        gain = np.where(valid, np.maximum(margin, 0.0) + _EPS, 0.0)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]
    matched_rows = {r for r, _ in pairs}
    matched_cols = {c for _, c in pairs}
    return Matches(
        pairs=tuple(pairs),
        unmatched_rows=tuple(r for r in range(rows_n) if r not in matched_rows),
        unmatched_cols=tuple(c for c in range(cols_n) if c not in matched_cols),
    )


def _one_to_one(rows: NDArray[np.intp], cols: NDArray[np.intp]) -> bool:
    """Whether no row and no column occurs twice among the valid pairs (`rows`, `cols`)."""
    return len(set(rows.tolist())) == rows.size and len(set(cols.tolist())) == cols.size


def match(iou: NDArray[np.floating], *, min_iou: float) -> Matches:
    """The pairs of at least `min_iou` IoU with the largest total IoU above `min_iou`."""
    score = np.asarray(iou, dtype=np.float64)
    return _assign(score - min_iou, valid=score >= min_iou)


def match_nearest(distance: NDArray[np.floating], *, max_distance: float) -> Matches:
    """The pairs closer than `max_distance` with the smallest total distance, as a gain."""
    score = np.asarray(distance, dtype=np.float64)
    valid = score < max_distance
    # inf (a gated pair) minus a finite gate stays out through `valid`, not arithmetic.
    return _assign(np.where(valid, max_distance - score, 0.0), valid=valid)
