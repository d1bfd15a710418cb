"""The substream's view inside the main stream's picture: box mapping and the view check.

Pure numpy and OpenCV, no I/O. A substream is usually the main picture scaled down, so a
box normalised to the substream is the same box normalised to the main stream; a substream
that is a crop (or a main stream letterboxed around it) needs the mapping the operator gives
as `main_stream.map` (config/mainstream.py). `similarity` compares two pictures of the same
moment so the service can tell (once per connection) whether the views match, and pick the
main-stream frame that shows the substream frame's moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge_facedet.config.mainstream import FieldOfView
    from edge_facedet.tracking.events import Box

__all__ = [
    "COMPARE_SIZE",
    "FOV_MIN_SIMILARITY",
    "map_box",
    "similarity",
    "small_gray",
    "view_match",
    "view_of",
]

COMPARE_SIZE = (64, 36)
"""Width, height of the grey pictures compared: small enough that encoder noise and the
two renditions' sharpness average out, large enough that a crop or a shift shows."""
FOV_MIN_SIMILARITY = 0.6
"""Below this normalised cross-correlation the two streams do not show the same view (two
encodes of one picture score near 1; a 10 % crop or a letterbox scores far lower)."""
ZOOMS = ((0.9, 0.9), (0.8, 0.8), (0.7, 0.7), (0.6, 0.6), (0.5, 0.5), (0.75, 1.0), (1.0, 0.75))
"""Centred crops (width, height shares) tried on either picture by `view_match`: zoomed
views, and a 4:3 picture cut from a 16:9 one (or the other way round)."""
CROP_WEIGHT = 10.0
"""Similarity taken off per unit a crop fits better than the pictures as they are: two
renditions of one view fit best as they are, by a hair at least."""


def map_box(box: Box, *, view: FieldOfView | None) -> Box:
    """`box`, normalised to the substream, normalised to the main stream's picture."""
    if view is None:
        return box
    x_min, y_min, x_max, y_max = box
    return (
        view.x + x_min * view.w,
        view.y + y_min * view.h,
        view.x + x_max * view.w,
        view.y + y_max * view.h,
    )


def view_of(image: NDArray[np.uint8], *, view: FieldOfView | None) -> NDArray[np.uint8]:
    """The part of a main-stream picture the substream shows."""
    if view is None:
        return image
    height, width = image.shape[:2]
    left, top = round(view.x * width), round(view.y * height)
    right = max(left + 1, round((view.x + view.w) * width))
    bottom = max(top + 1, round((view.y + view.h) * height))
    return image[top:bottom, left:right]


def small_gray(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    """A BGR or grey picture as a COMPARE_SIZE grey float picture, zero mean, unit norm."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, COMPARE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    small -= float(small.mean())
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 0 else small


def similarity(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Normalised cross-correlation of two `small_gray` pictures, -1..1."""
    return float(np.sum(a * b))


def view_match(main: NDArray[np.uint8], sub: NDArray[np.uint8]) -> float:
    """How well `sub` shows the view of `main`: their similarity, less CROP_WEIGHT times
    however much better a centred crop of either fits (ZOOMS). A face filling a close-up
    looks alike cropped or not at a coarse size; the crop fitting better still tells.
    0..1: one damaged picture cannot outweigh the others it is averaged with."""
    small_main, small_sub = small_gray(main), small_gray(sub)
    same = similarity(small_main, small_sub)
    others = [similarity(small_gray(_centre(main, zoom)), small_sub) for zoom in ZOOMS] + [
        similarity(small_main, small_gray(_centre(sub, zoom))) for zoom in ZOOMS
    ]
    return max(0.0, same - CROP_WEIGHT * max(0.0, max(others) - same))


def _centre(image: NDArray[np.uint8], zoom: tuple[float, float]) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    keep_w, keep_h = max(1, round(width * zoom[0])), max(1, round(height * zoom[1]))
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    return image[top : top + keep_h, left : left + keep_w]
