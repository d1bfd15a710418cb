"""Turning the SSD head's `detection_out` tensor into per-frame `Detections`, vectorised.

face-detection-0204 ends in a DetectionOutput layer: `[1, 1, N, 7]` rows of
`[image_id, label, confidence, x_min, y_min, x_max, y_max]` with normalised coordinates, for
a whole batch at once (`N = 200 * batch`), ordered by image, and terminated by a row whose
`image_id` is -1 when fewer than N boxes are kept. Some runtimes return `[B, 1, N, 7]`
instead, one slice per image; both shapes are accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_facedet.frames import Detections

if TYPE_CHECKING:
    from numpy.typing import NDArray

ROW_WIDTH = 7
_IMAGE_ID, _CONFIDENCE, _BOX = 0, 2, slice(3, 7)


def _valid_rows(rows: NDArray[np.float32]) -> NDArray[np.float32]:
    """The rows before the first `image_id == -1` terminator."""
    terminators = np.flatnonzero(rows[:, _IMAGE_ID] < 0)
    return rows[: terminators[0]] if terminators.size else rows


def split_batch(raw: NDArray[np.float32], *, batch: int) -> list[NDArray[np.float32]]:
    """Per-image candidate rows `(M, 5)`: confidence, x_min, y_min, x_max, y_max (normalised).

    No threshold is applied here beyond the model's own; `batch` is the number of images the
    caller put into the request (padding images beyond it are discarded).
    """
    if raw.ndim != 4 or raw.shape[1] != 1 or raw.shape[3] != ROW_WIDTH:
        raise ValueError(f"expected detection_out of shape [B, 1, N, 7], got {list(raw.shape)}")
    columns = [_CONFIDENCE, 3, 4, 5, 6]
    if raw.shape[0] > 1:
        if raw.shape[0] < batch:
            raise ValueError(f"output holds {raw.shape[0]} images, {batch} were submitted")
        return [
            np.ascontiguousarray(_valid_rows(raw[i, 0])[:, columns], dtype=np.float32)
            for i in range(batch)
        ]
    rows = _valid_rows(raw.reshape(-1, ROW_WIDTH))
    if batch == 1:
        # One image per request (the default; runs on the event loop for every frame): a
        # mask and the column range in one gather, instead of the grouping below, which
        # costs five more numpy calls. The columns are 2..6, so a slice does.
        own = rows[rows[:, _IMAGE_ID] == 0, _CONFIDENCE : _BOX.stop]
        return [own if own.dtype == np.float32 else own.astype(np.float32)]
    image_ids = rows[:, _IMAGE_ID].astype(np.int64)
    # Rows come grouped by image; searchsorted finds each image's run without a Python loop
    # over rows (a boolean mask per image would scan all rows B times).
    if image_ids.size and np.any(np.diff(image_ids) < 0):
        order = np.argsort(image_ids, kind="stable")
        rows, image_ids = rows[order], image_ids[order]
    bounds = np.searchsorted(image_ids, np.arange(batch + 1), side="left")
    selected = rows[:, columns].astype(np.float32, copy=False)
    return [np.ascontiguousarray(selected[bounds[i] : bounds[i + 1]]) for i in range(batch)]


def to_detections(
    rows: NDArray[np.float32],
    *,
    frame_width: int,
    frame_height: int,
    confidence_threshold: float,
    min_face_px: int = 0,
    roi: tuple[float, float, float, float] | None = None,
) -> Detections:
    """Threshold, clip to the frame, filter by size and region, sort by confidence.

    `rows` is one image's output of `split_batch`. `roi` is `(x_min, y_min, x_max, y_max)`
    normalised; a face is kept when its box centre lies inside.
    """
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"expected (M, 5) rows, got {rows.shape}")
    if frame_width <= 0 or frame_height <= 0:
        raise ValueError(f"frame size must be positive, got {frame_width}x{frame_height}")
    # Runs on the event loop for every frame, at a few faces: as few numpy calls as can be
    # (minimum/maximum instead of np.clip's Python wrapper; one gather per array).
    selected = rows[rows[:, 0] >= confidence_threshold]
    if not selected.size:
        return Detections.empty()
    boxes_norm = np.minimum(np.maximum(selected[:, 1:5], 0.0), 1.0)
    scale = np.array([frame_width, frame_height, frame_width, frame_height], np.float32)
    boxes_px = boxes_norm * scale
    widths = boxes_px[:, 2] - boxes_px[:, 0]
    heights = boxes_px[:, 3] - boxes_px[:, 1]
    # Clipping can collapse a box that lay wholly outside the frame to zero area.
    keep = (widths > 0) & (heights > 0) & (heights >= min_face_px)
    if roi is not None:
        centre_x = (boxes_norm[:, 0] + boxes_norm[:, 2]) * 0.5
        centre_y = (boxes_norm[:, 1] + boxes_norm[:, 3]) * 0.5
        keep &= (centre_x >= roi[0]) & (centre_x <= roi[2])
        keep &= (centre_y >= roi[1]) & (centre_y <= roi[3])
    kept = np.flatnonzero(keep)
    confidences = selected[kept, 0]
    order = kept[np.argsort(-confidences, kind="stable")]
    return Detections(
        boxes_px=np.ascontiguousarray(boxes_px[order], dtype=np.float32),
        boxes_norm=np.ascontiguousarray(boxes_norm[order], dtype=np.float32),
        confidences=np.ascontiguousarray(selected[order, 0], dtype=np.float32),
    )
