"""How good one detected face is as a picture: what a track's best face is chosen by.

It runs on the event loop for every detected face, so it looks only at the network input
(always there, also with snapshots off) and costs a handful of small OpenCV calls on a
fixed-size patch, whatever the face's size.

    score = cut_factor * (W_CONFIDENCE * confidence + W_SIZE * size + W_SHARPNESS * sharp)

* `confidence`, clipped to [0, 1]: the detector's own doubt covers what the other terms
  cannot see (a profile, a hand in front of the face). It gets the smallest weight because
  confirmed faces nearly all score above 0.9, so it separates little.
* `size = clip(log2(height_px / MIN_HEIGHT_PX) / log2(FULL_HEIGHT_PX / MIN_HEIGHT_PX), 0, 1)`
  on the face height in pixels of the frame as the camera delivered it. Each doubling of
  the height is the same step, as each doubling adds a recogniser about as much; it
  saturates at FULL_HEIGHT_PX, so a 150 px face is not worse than a 300 px one (the one
  nearer the camera is often the more foreshortened or cut).
* `sharp = 1 - exp(-sharpness / SHARPNESS_SCALE)`, where `sharpness` is the variance of the
  Laplacian of the face, cut from the network input and resampled to PATCH_PX x PATCH_PX
  grey. The resampling normalises for crop size (a large crop spreads the same detail over
  more pixels, which alone lowers the variance) and bounds the cost. Motion and focus blur
  remove exactly the high frequencies the Laplacian measures. It saturates because beyond
  a crisp face more "sharpness" is sensor noise or a patterned background, not detail.
* The terms are summed, not multiplied: one weak term (a slightly small but crisp face)
  should lower the score, not zero it, so the best of several imperfect faces still wins.
* `cut_factor` is CUT_FACTOR when the box touches the frame edge, else 1: a face that
  leaves the picture is probably missing part of itself, and the multiplication keeps it
  below the same face seen whole, whatever its other terms.

Degenerate input (a box of zero size, wholly outside the image, or not finite; a
confidence that is not finite) gives a score of 0, never NaN and never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge_facedet.tracking.events import Box

__all__ = ["FaceQuality", "face_quality"]

W_CONFIDENCE = 0.2
W_SIZE = 0.4
W_SHARPNESS = 0.4
CUT_FACTOR = 0.5
MIN_HEIGHT_PX = 16.0
"""A face this small (in frame pixels) gets nothing for size."""
FULL_HEIGHT_PX = 128.0
"""From this height on (in frame pixels) a face gets the full size term."""
PATCH_PX = 32
"""Side of the grey patch the sharpness is measured on (about a typical face in the input)."""
SHARPNESS_SCALE = 300.0
"""Laplacian variance at which `sharp` reaches 1 - 1/e: a crisp mid-sized face in good light
is a few times this, the same face blurred by a couple of pixels a fraction of it."""
_SIZE_SPAN = math.log2(FULL_HEIGHT_PX / MIN_HEIGHT_PX)


@dataclass(frozen=True, slots=True)
class FaceQuality:
    score: float
    """[0, 1], what the best face is chosen by."""
    sharpness: float
    """Variance of the Laplacian on the face crop (grey, resampled to PATCH_PX square)."""
    height_px: float
    """Face height in pixels of the frame as the camera delivered it."""
    cut: bool
    """The box touches the frame edge (the face is probably cut)."""


_NOTHING = FaceQuality(score=0.0, sharpness=0.0, height_px=0.0, cut=False)


def face_quality(
    *,
    image: NDArray[np.uint8],
    box_norm: Box,
    confidence: float,
    frame_width: int,
    frame_height: int,
) -> FaceQuality:
    """Score one face; `image` is the frame's BGR network input, `box_norm` in [0, 1]."""
    x_min, y_min, x_max, y_max = box_norm
    if not (
        math.isfinite(x_min)
        and math.isfinite(y_min)
        and math.isfinite(x_max)
        and math.isfinite(y_max)
        and math.isfinite(confidence)
    ):
        return _NOTHING
    x_min, x_max = max(x_min, 0.0), min(x_max, 1.0)
    y_min, y_max = max(y_min, 0.0), min(y_max, 1.0)
    if x_max <= x_min or y_max <= y_min or frame_width <= 0 or frame_height <= 0:
        return _NOTHING
    height_px = (y_max - y_min) * frame_height
    cut = _touches_edge(
        box=(x_min, y_min, x_max, y_max), frame_width=frame_width, frame_height=frame_height
    )
    sharpness = _sharpness(image=image, box=(x_min, y_min, x_max, y_max))
    size = min(max(math.log2(max(height_px, 1e-6) / MIN_HEIGHT_PX) / _SIZE_SPAN, 0.0), 1.0)
    sharp = 1.0 - math.exp(-sharpness / SHARPNESS_SCALE)
    score = (
        W_CONFIDENCE * min(max(confidence, 0.0), 1.0) + W_SIZE * size + W_SHARPNESS * sharp
    ) * (CUT_FACTOR if cut else 1.0)
    return FaceQuality(
        score=min(max(score, 0.0), 1.0), sharpness=sharpness, height_px=height_px, cut=cut
    )


def _touches_edge(*, box: Box, frame_width: int, frame_height: int) -> bool:
    # Within one frame pixel: the detector clips boxes to the frame, so a face that leaves
    # it ends exactly on the edge (or a rounding away from it).
    margin_x, margin_y = 1.0 / frame_width, 1.0 / frame_height
    return (
        box[0] <= margin_x
        or box[1] <= margin_y
        or box[2] >= 1.0 - margin_x
        or box[3] >= 1.0 - margin_y
    )


def _sharpness(*, image: NDArray[np.uint8], box: Box) -> float:
    """Laplacian variance of the box's patch; `box` is clipped to [0, 1] and not empty."""
    height, width = image.shape[:2]
    left, right = math.floor(box[0] * width), math.ceil(box[2] * width)
    top, bottom = math.floor(box[1] * height), math.ceil(box[3] * height)
    crop = image[top:bottom, left:right]
    if crop.size == 0:
        return 0.0
    # Resampling the colour crop first makes the grey conversion a fixed small cost.
    patch = cv2.resize(crop, (PATCH_PX, PATCH_PX), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    variance = float(std[0, 0]) ** 2
    return variance if math.isfinite(variance) else 0.0
