"""A track's best face as a JPEG, in the camera's snapshot mode.

Blocking (a full-size picture conversion, resampling, JPEG encoding): call it from a worker
thread, never on the event loop. Boxes come normalised to [0, 1], so the picture may have
another resolution than the frame the faces were detected in. The picture is never changed:
`ArrayPicture.to_bgr()` hands out its own array, which other jobs may share.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_facedet.config.snapshots import SnapshotMode
from edge_facedet.tracking.keep import box_pixels

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from edge_facedet.config.snapshots import SnapshotConfig
    from edge_facedet.frames import Picture
    from edge_facedet.tracking.events import Box

__all__ = ["render_snapshot"]

BEST_COLOUR = (0, 255, 0)
"""BGR green: the track's best face, drawn last so it is on top."""
OTHER_COLOUR = (0, 190, 255)
"""BGR amber: the other faces of the frame."""
LINE_STEP_PX = 640
"""One more pixel of line width per this many pixels of the picture's longest side."""
HIDE_MARGIN = 0.25
"""blurred_frame: share of a face's size hidden beyond its box on each side. Detector boxes
are tight around the features; hair, ears and the jaw line identify a person too."""
HIDE_CELLS = 4
"""blurred_frame: pixelation cells across a face's longer side; at this count no facial
feature keeps a cell of its own, so nothing about it survives the averaging."""
HIDE_BLUR_CELLS = 2
"""blurred_frame: width of the box blur after the pixelation, in cells. Wide enough that no
cell edge survives: a detector still finds faces in a grid of sharp-edged blocks."""


def render_snapshot(
    *,
    picture: Picture,
    mode: SnapshotMode,
    config: SnapshotConfig,
    box_norm: Box,
    boxes_norm: Sequence[Box],
) -> bytes:
    """The JPEG of `picture` for `mode`; ValueError for mode off or a box that is not usable.

    crop: the best face (`box_norm`) with `config.margin` of its size on each side, clamped to
    the picture. frame: the whole picture, every box drawn, the best one highlighted.
    blurred_frame: the whole picture, every face (`boxes_norm` and `box_norm`) pixelated and
    blurred with a margin, no boxes drawn. Scaled down (never up) to `config.max_size_px`.
    """
    if mode is SnapshotMode.OFF:
        raise ValueError("snapshot mode is off: there is nothing to render")
    image = _bgr(picture)
    best = _finite(box_norm)
    others = [_finite(box) for box in boxes_norm]
    if mode is SnapshotMode.CROP:
        out = _fit(_crop(image, box=best, margin=config.margin), max_size=config.max_size_px)
    elif mode is SnapshotMode.FRAME:
        out = _fit(image, max_size=config.max_size_px, copy=True)
        _draw(out, best=best, others=others)
    else:
        out = _fit(image, max_size=config.max_size_px, copy=True)
        # The best face is hidden even if the caller left it out of `boxes_norm`: a frame
        # that is meant to be anonymous must not show the one face it was taken for.
        for box in (*others, best):
            _hide(out, box=box)
    return _encode(out, quality=config.jpeg_quality)


def _bgr(picture: Picture) -> NDArray[np.uint8]:
    image = picture.to_bgr()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(f"picture must be HxWx3 uint8 BGR, got {image.dtype} {image.shape}")
    return image


def _finite(box: Box) -> Box:
    if len(box) != 4 or not all(math.isfinite(value) for value in box):
        raise ValueError(f"face box must be 4 finite numbers, got {box!r}")
    return box


def _crop(image: NDArray[np.uint8], *, box: Box, margin: float) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    region = box_pixels(box, width=width, height=height, margin=margin)
    if region is None:
        raise ValueError(f"face box {box!r} is empty or outside the picture")
    left, top, right, bottom = region
    return image[top:bottom, left:right]


def _fit(image: NDArray[np.uint8], *, max_size: int, copy: bool = False) -> NDArray[np.uint8]:
    """Scaled down so the longest side is at most `max_size`; a new array if `copy`."""
    height, width = image.shape[:2]
    longest = max(width, height)
    if longest <= max_size:
        return image.copy() if copy else image
    scale = max_size / longest
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def _draw(image: NDArray[np.uint8], *, best: Box, others: Sequence[Box]) -> None:
    height, width = image.shape[:2]
    thickness = max(1, round(max(width, height) / LINE_STEP_PX))
    for box, colour, extra in [*((box, OTHER_COLOUR, 0) for box in others), (best, BEST_COLOUR, 1)]:
        region = box_pixels(box, width=width, height=height, margin=0.0)
        if region is not None:
            left, top, right, bottom = region
            cv2.rectangle(image, (left, top), (right - 1, bottom - 1), colour, thickness + extra)


def _hide(image: NDArray[np.uint8], *, box: Box) -> None:
    """Pixelate the face (with HIDE_MARGIN) into coarse cells, then blur away the cell edges.

    The pixelation is what removes the identity (each cell keeps only an average colour);
    the box blur afterwards (linear in the area whatever its width) smooths the cells into
    one blob, so the block pattern neither draws the eye nor gives a detector edges to fire
    on.
    """
    height, width = image.shape[:2]
    region = box_pixels(box, width=width, height=height, margin=HIDE_MARGIN)
    if region is None:
        return
    left, top, right, bottom = region
    face_px = max((box[2] - box[0]) * width, (box[3] - box[1]) * height)
    cell = max(2, math.ceil(face_px / HIDE_CELLS))
    patch = image[top:bottom, left:right]
    rows, cols = patch.shape[:2]
    grid = (max(1, math.ceil(cols / cell)), max(1, math.ceil(rows / cell)))
    coarse = cv2.resize(patch, grid, interpolation=cv2.INTER_AREA)
    blocks = cv2.resize(coarse, (cols, rows), interpolation=cv2.INTER_NEAREST)
    width_px = HIDE_BLUR_CELLS * cell
    image[top:bottom, left:right] = cv2.blur(blocks, (width_px, width_px))


def _encode(image: NDArray[np.uint8], *, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("the JPEG encoder refused the picture")
    return bytes(data.tobytes())
