"""The small types that flow through the pipeline: a captured frame and its detections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from datetime import datetime

    from numpy.typing import NDArray


class Picture(Protocol):
    """A frame at the resolution the camera delivered it, converted to BGR only on demand.

    Readers attach one to a `Frame` only for cameras whose snapshots are on: it keeps the
    decoded picture alive until its results are back, and converting it costs a full-size
    colour conversion, which only a snapshot's worker thread pays (never the event loop).
    """

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def to_bgr(self) -> NDArray[np.uint8]:
        """HxWx3 BGR at `width` x `height`; may take milliseconds, call it off the loop.

        The array may be the picture's own (read-only): copy it before drawing on it.
        """
        ...


@dataclass(frozen=True, slots=True)
class ArrayPicture:
    """A `Picture` that is already a BGR array (OpenCV's decoder converts every frame)."""

    array: NDArray[np.uint8]

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    def to_bgr(self) -> NDArray[np.uint8]:
        return self.array


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
    picture: Picture | None = None
    """The full-resolution picture, for cameras with snapshots on; None otherwise."""
    recheck: bool = False
    """Sent only because the camera's motion gate was due a recheck (no motion, no faces):
    under contention the scheduler serves other frames first."""


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

    def at_least(self, confidence: float) -> Detections:
        """The detections with at least `confidence` (a prefix: confidences descend)."""
        count = int(np.count_nonzero(self.confidences >= confidence))
        if count == len(self):
            return self
        return Detections(
            boxes_px=self.boxes_px[:count],
            boxes_norm=self.boxes_norm[:count],
            confidences=self.confidences[:count],
        )

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            boxes_px=np.zeros((0, 4), np.float32),
            boxes_norm=np.zeros((0, 4), np.float32),
            confidences=np.zeros((0,), np.float32),
        )
