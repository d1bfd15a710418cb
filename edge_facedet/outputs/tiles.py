"""A camera tile's JPEG for the web page: made in the HTTP thread, on request, at a bounded rate.

Nothing is encoded while nobody watches. When a browser asks for a camera's picture:

* the JPEG of the latest frame is cached by its `seq`: repeated polls of the same frame, or
  any poll within `min_interval_s` of the last encode, get the cached bytes (at most
  1 / `min_interval_s` encodes per camera and second);
* across cameras at most `max_per_s` encodes are made per second; over that budget a camera
  with a cached JPEG gets it, one without waits (`None`: the route answers 503 + Retry-After).

So the HTTP thread, which also answers `/metrics`, spends a bounded share of its time here,
and a single request costs one downscale and one encode of a frame at most `max_size_px`.

What a tile shows follows the camera's snapshot mode, the one per-camera image switch:
off: nothing (no picture is kept); frame: the frame with every face's box; blurred_frame:
the frame with every face the tracker saw hidden by render.py's own pixelate-and-blur;
crop: the web output's latest snapshot (a face crop), never the frame (see web.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2

from edge_facedet.config.snapshots import SnapshotMode
from edge_facedet.outputs.snapshots.render import _encode, _fit, _hide
from edge_facedet.tracking.keep import box_pixels

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.config import CameraConfig
    from edge_facedet.outputs.latest import LatestFrame

__all__ = ["TileEncoder", "TileLimits"]

BOX_COLOUR = (0, 190, 255)
"""BGR amber, as the other faces in a frame snapshot."""


@dataclass(frozen=True, slots=True)
class TileLimits:
    min_interval_s: float = 0.5
    """A camera's tile is encoded again at most this often (a faster poll gets the cache)."""
    max_per_s: int = 16
    """Encodes per second across every camera, so many cameras cannot take the thread."""
    max_size_px: int = 960
    """Longest side of a tile (smaller if the camera's snapshots.max_size_px is)."""


@dataclass(frozen=True, slots=True)
class _Cached:
    seq: int
    jpeg: bytes
    at: float


class TileEncoder:
    """The tile JPEG of a camera's `LatestFrame`, cached and rate-bounded (module docstring).

    Called from the HTTP thread only; a lock still guards the cache so a second caller
    (a test, a future thread) cannot corrupt it.
    """

    def __init__(
        self,
        *,
        cameras: dict[str, CameraConfig],
        limits: TileLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cameras = cameras
        self._limits = limits or TileLimits()
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._window_start = float("-inf")
        self._window_count = 0
        self._lock = threading.Lock()
        self.encodes = 0
        """Encodes made so far (tests and the README's figures read it)."""

    def tile(self, latest: LatestFrame) -> bytes | None:
        """The JPEG for `latest`'s camera (None: over budget with nothing cached, or no
        picture). Only for frame and blurred_frame cameras; ValueError for the others."""
        camera = self._cameras[latest.camera_id]
        mode = camera.snapshots.mode
        if mode not in {SnapshotMode.FRAME, SnapshotMode.BLURRED_FRAME}:
            raise ValueError(f"camera {latest.camera_id}: {mode.value} tiles show no frame")
        with self._lock:
            now = self._clock()
            cached = self._cache.get(latest.camera_id)
            if cached is not None and (
                cached.seq == latest.seq or now - cached.at < self._limits.min_interval_s
            ):
                return cached.jpeg
            if latest.picture is None or not self._take_budget(now):
                return None if cached is None else cached.jpeg
            jpeg = self._render(latest, mode=mode, camera=camera)
            self.encodes += 1
            self._cache[latest.camera_id] = _Cached(seq=latest.seq, jpeg=jpeg, at=now)
            return jpeg

    def _take_budget(self, now: float) -> bool:
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        if self._window_count >= self._limits.max_per_s:
            return False
        self._window_count += 1
        return True

    def _render(self, latest: LatestFrame, *, mode: SnapshotMode, camera: CameraConfig) -> bytes:
        assert latest.picture is not None  # noqa: S101 - checked by the caller
        max_size = min(self._limits.max_size_px, camera.snapshots.max_size_px)
        image = _fit(latest.picture.to_bgr(), max_size=max_size, copy=True)
        if mode is SnapshotMode.BLURRED_FRAME:
            for box in latest.hidden_norm.tolist():
                _hide(image, box=(box[0], box[1], box[2], box[3]))
        else:
            _draw_boxes(image, boxes=latest.boxes_norm)
        return _encode(image, quality=camera.snapshots.jpeg_quality)


def _draw_boxes(image: NDArray[np.uint8], *, boxes: NDArray[np.float32]) -> None:
    height, width = image.shape[:2]
    thickness = max(2, round(max(width, height) / 480))
    for box in boxes.tolist():
        face = (box[0], box[1], box[2], box[3])
        region = box_pixels(face, width=width, height=height, margin=0.0)
        if region is not None:
            left, top, right, bottom = region
            cv2.rectangle(image, (left, top), (right - 1, bottom - 1), BOX_COLOUR, thickness)
