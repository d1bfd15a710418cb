"""What an open track keeps of its best frame until the snapshot is rendered.

A track holds its best face's picture from the frame it was seen in until its next event
asks for the snapshot (up to `tracking.update_interval_s`, or to the track's end). Holding
the whole decoded frame costs 2.7 MB per track at 720p with OpenCV's decoder, and a busy
camera has several tracks open with a different best frame each: 16 face-dense cameras with
`crop` snapshots held 570 MB against 344 MB without snapshots (docs/benchmarks.md). A crop
snapshot shows only the face and its margin, so for those cameras the track keeps just that
region, copied out of the frame (tens of microseconds), and its box relative to the region;
the rendering then crops the same pixels it would have cropped from the whole frame.

Only pictures that are already BGR arrays are cut here: cutting any other (PyAV's YUV
frames) means converting it first, which costs milliseconds and belongs to the snapshot
worker, not to the event loop this runs on. The `frame` modes, and the main stream (which
matches the substream's whole picture against its own frames), keep the whole picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_facedet.frames import ArrayPicture

if TYPE_CHECKING:
    from edge_facedet.frames import Picture
    from edge_facedet.tracking.events import Box

__all__ = ["SLACK_PX", "Kept", "box_pixels", "keep_face_region"]

SLACK_PX = 2
"""Pixels kept beyond the crop on each side, so that rounding the box relative to the region
can never cut a pixel the whole-frame crop would have had."""


@dataclass(frozen=True, slots=True)
class Kept:
    """A picture a track keeps and the best box in it, normalised to that picture."""

    picture: Picture
    box_norm: Box


def box_pixels(
    box: Box, *, width: int, height: int, margin: float
) -> tuple[int, int, int, int] | None:
    """`box` (normalised) grown by `margin` of its size on each side, in whole pixels,
    clamped to the picture (outwards: floor for the start, ceil for the end); None if
    nothing is left."""
    x_min, y_min = box[0] * width, box[1] * height
    x_max, y_max = box[2] * width, box[3] * height
    grow_x, grow_y = margin * (x_max - x_min), margin * (y_max - y_min)
    left = max(math.floor(x_min - grow_x), 0)
    top = max(math.floor(y_min - grow_y), 0)
    right = min(math.ceil(x_max + grow_x), width)
    bottom = min(math.ceil(y_max + grow_y), height)
    if right <= left or bottom <= top or x_max <= x_min or y_max <= y_min:
        return None
    return left, top, right, bottom


def keep_face_region(picture: Picture, *, box_norm: Box, margin: float) -> Kept:
    """The face of `box_norm` with `margin` (and `SLACK_PX`) cut out of `picture` as a copy,
    with the box relative to it; `picture` itself when it is not a BGR array or the box
    leaves nothing to cut."""
    if not isinstance(picture, ArrayPicture):
        return Kept(picture, box_norm)
    width, height = picture.width, picture.height
    region = box_pixels(box_norm, width=width, height=height, margin=margin)
    if region is None:
        return Kept(picture, box_norm)
    left, top, right, bottom = region
    left, top = max(left - SLACK_PX, 0), max(top - SLACK_PX, 0)
    right, bottom = min(right + SLACK_PX, width), min(bottom + SLACK_PX, height)
    cut = picture.array[top:bottom, left:right].copy()  # a copy: the frame is let go
    cut_width, cut_height = right - left, bottom - top
    x_min, y_min, x_max, y_max = box_norm
    relative = (
        (x_min * width - left) / cut_width,
        (y_min * height - top) / cut_height,
        (x_max * width - left) / cut_width,
        (y_max * height - top) / cut_height,
    )
    return Kept(ArrayPicture(cut), relative)
