"""The small types that flow through the pipeline: a captured frame and its detections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datetime import datetime

    from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame, already resized to the network input by its reader thread."""

    camera_id: str
    seq: int
    """Monotonic per camera, starting at 0 for each reader; never reused within a run."""
    capture_time: datetime
    """Wall-clock capture time, timezone-aware UTC."""
    capture_monotonic: float
    """`time.monotonic()` at capture, for latency measurements."""
    width: int
    """Width of the frame as the camera delivered it, in pixels."""
    height: int
    """Height of the frame as the camera delivered it, in pixels."""
    image: NDArray[np.uint8]
    """BGR, HxWx3, network input size (448x448 for face-detection-0204)."""


@dataclass(frozen=True, slots=True)
class Detections:
    """The faces found in one frame, as parallel numpy arrays (no per-face objects)."""

    boxes_px: NDArray[np.float32]
    """(N, 4) x_min, y_min, x_max, y_max in pixels of the original frame, clipped to it."""
    boxes_norm: NDArray[np.float32]
    """(N, 4) the same boxes normalised to [0, 1]."""
    confidences: NDArray[np.float32]
    """(N,) detection confidences, descending."""

    def __len__(self) -> int:
        return int(self.confidences.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            boxes_px=np.zeros((0, 4), np.float32),
            boxes_norm=np.zeros((0, 4), np.float32),
            confidences=np.zeros((0,), np.float32),
        )
