"""Motion on a camera's due frames: a change against a running-average background.

`MotionDetector` looks at a small grey picture of each due frame (`VideoSource.gray`, about
120 px high), so it costs a small fraction of a millisecond and no full-size conversion it
would not need otherwise. Per picture: a Gaussian blur (sensor noise and compression blocks
average out), the absolute difference against the background (a running average,
`cv2.accumulateWeighted`, so slow changes such as daylight become background), a threshold
in grey levels, and the share of the watched pixels that changed (inside the camera's ROI,
outside its motion masks) against `min_area`.

A lighting step (auto-exposure, lights switched on, a camera's IR switch) changes most of the
picture at once. A share of `recalibrate_area` or more is therefore not motion: the
background is reset to the new picture (recalibration) instead of firing on every frame
until the running average has caught up. What that costs: a person who enters during the
very frame of the step becomes part of the new background. One who keeps moving is motion
again from the next due frame on; one who stands still is found by the gate's next recheck
(`recheck_interval_s`), not by motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["MotionDetector", "MotionResult", "MotionSettings", "Polygon"]

Polygon = tuple[tuple[float, float], ...]
"""Points (x, y) normalised to the upright frame, 0..1."""

_BLUR_KERNEL = (5, 5)
"""At about 120 px high a 5x5 Gaussian spans a few centimetres of a room: it removes pixel
noise and 8x8-block compression edges (already averaged by the downscale), not a person."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MotionSettings:
    """How one camera tells motion from noise (config: `motion:`, edge_facedet.config.motion)."""

    threshold: int = 25
    """Grey levels a blurred pixel must differ from the background by to count as changed."""
    min_area: float = 0.002
    """Share of the watched pixels that must change to be motion."""
    recalibrate_area: float = 0.5
    """Share that is a lighting step: the background is reset, no motion reported."""
    background_s: float = 2.0
    """Time constant of the running-average background."""
    height_px: int = 120
    """Height of the small grey picture."""
    roi: tuple[float, float, float, float] | None = None
    """The camera's region of interest (x_min, y_min, x_max, y_max), normalised; None: all."""
    masks: tuple[Polygon, ...] = ()
    """Polygons whose changes are ignored."""

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= 255:
            raise ValueError(f"threshold must be in 1..255, got {self.threshold}")
        if not 0 < self.min_area < self.recalibrate_area <= 1:
            raise ValueError("need 0 < min_area < recalibrate_area <= 1")
        if self.background_s <= 0 or self.height_px < 8:
            raise ValueError("background_s must be > 0 and height_px >= 8")


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What one picture showed."""

    motion: bool
    changed: float
    """Share of the watched pixels that differed from the background."""
    recalibrated: bool
    """The background was (re)started from this picture: the first one, a new picture size,
    or a lighting step; never motion."""


class MotionDetector:
    """One camera's motion, picture by picture; used by its reader thread only."""

    def __init__(self, *, settings: MotionSettings, frame_interval_s: float) -> None:
        """`frame_interval_s` is the time between pictures (the detect period): the
        background's weight per picture is derived from it, so `background_s` means the
        same at any detect_fps."""
        if frame_interval_s <= 0:
            raise ValueError(f"frame_interval_s must be > 0, got {frame_interval_s}")
        self._settings = settings
        self._alpha = 1.0 - math.exp(-frame_interval_s / settings.background_s)
        self._background: NDArray[np.float32] | None = None
        self._watched: NDArray[np.uint8] | None = None
        self._watched_pixels = 0

    @property
    def height_px(self) -> int:
        return self._settings.height_px

    def reset(self) -> None:
        """Forget the background (a new session: the picture may have changed meanwhile)."""
        self._background = None

    def detect(self, gray: NDArray[np.uint8]) -> MotionResult:
        """Motion in `gray` (the next small grey picture) against the background so far."""
        blurred = cast("NDArray[np.uint8]", cv2.GaussianBlur(gray, _BLUR_KERNEL, 0))
        background = self._background
        if background is None or background.shape != blurred.shape:
            return self._restart(blurred)
        delta = cv2.absdiff(blurred, cv2.convertScaleAbs(background))
        _, changed = cv2.threshold(delta, self._settings.threshold, 255, cv2.THRESH_BINARY)
        if self._watched is not None:
            changed = cv2.bitwise_and(changed, self._watched)
        share = cv2.countNonZero(changed) / self._watched_pixels
        if share >= self._settings.recalibrate_area:
            return self._restart(blurred, changed=share)
        cv2.accumulateWeighted(blurred, background, self._alpha)
        return MotionResult(
            motion=share >= self._settings.min_area, changed=share, recalibrated=False
        )

    def _restart(self, blurred: NDArray[np.uint8], *, changed: float = 0.0) -> MotionResult:
        if self._background is None or self._background.shape != blurred.shape:
            self._watched = _watched_mask(blurred.shape, settings=self._settings)
            self._watched_pixels = max(
                1,
                blurred.size if self._watched is None else cv2.countNonZero(self._watched),
            )
        self._background = blurred.astype(np.float32)
        return MotionResult(motion=False, changed=changed, recalibrated=True)


def _watched_mask(shape: tuple[int, ...], *, settings: MotionSettings) -> NDArray[np.uint8] | None:
    """255 where changes count (inside the ROI, outside every mask), 0 elsewhere; None when
    every pixel counts (no ROI, no masks), which saves the per-picture AND."""
    if settings.roi is None and not settings.masks:
        return None
    height, width = shape[0], shape[1]
    watched = np.zeros((height, width), np.uint8)
    x_min, y_min, x_max, y_max = settings.roi or (0.0, 0.0, 1.0, 1.0)
    watched[
        math.floor(y_min * height) : math.ceil(y_max * height),
        math.floor(x_min * width) : math.ceil(x_max * width),
    ] = 255
    for polygon in settings.masks:
        points = np.array([(x * width, y * height) for x, y in polygon], np.float32)
        cv2.fillPoly(watched, [np.round(points).astype(np.int32)], 0)
    return watched
