"""Each camera's latest processed frame and its faces, for the web page: a reference, swapped.

The result pipeline calls `put` on the event loop for every processed frame; the HTTP
thread reads with `get` when a browser asks. `put` only builds one small immutable record
and replaces the camera's entry (no copy, no encoding), so a page nobody watches costs a
reference swap per frame; the JPEG is made in the HTTP thread on request (tiles.py).

The picture is kept only for cameras whose images are on (the reader attaches it only then,
`Frame.picture`), so a metadata-only camera's entry holds numbers and boxes, never a picture,
and an image camera holds one picture more than its open tracks do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.frames import Detections, Frame, Picture

__all__ = ["LatestFrame", "LatestFrames"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LatestFrame:
    """A camera's latest processed frame: what the page shows and the tile is drawn from."""

    camera_id: str
    seq: int
    capture_time: datetime
    width: int
    height: int
    boxes_norm: NDArray[np.float32]
    """(N, 4) the published faces (at least the camera's confidence_threshold), in [0, 1]."""
    confidences: NDArray[np.float32]
    hidden_norm: NDArray[np.float32]
    """(M, 4) every face the tracker saw (down to its low_confidence): what a blurred tile
    hides, as blurred_frame snapshots do."""
    picture: Picture | None
    frames: int
    """Frames of this camera processed since the start, this one included."""
    faces_total: int
    """Faces (published ones) in those frames."""

    @property
    def faces(self) -> int:
        return int(self.confidences.shape[0])


class LatestFrames:
    """Per camera, the latest `LatestFrame`; written on the loop, read from any thread."""

    def __init__(self, *, camera_ids: Iterable[str]) -> None:
        self._latest: dict[str, LatestFrame | None] = dict.fromkeys(camera_ids)
        # A reload replaces the dict whole (add/remove), and a value is one reference replaced
        # whole: readers need no lock; the lock orders the writers, never held long.
        self._lock = threading.Lock()

    def put(self, *, frame: Frame, detections: Detections, candidates: Detections) -> None:
        """`frame` was processed: `detections` published, `candidates` seen by the tracker."""
        if frame.camera_id not in self._latest:
            return
        with self._lock:
            previous = self._latest[frame.camera_id]
            frames = 1 if previous is None else previous.frames + 1
            faces_total = len(detections) + (0 if previous is None else previous.faces_total)
            self._latest[frame.camera_id] = LatestFrame(
                camera_id=frame.camera_id,
                seq=frame.seq,
                capture_time=frame.capture_time,
                width=frame.width,
                height=frame.height,
                boxes_norm=detections.boxes_norm,
                confidences=detections.confidences,
                hidden_norm=candidates.boxes_norm,
                picture=frame.picture,
                frames=frames,
                faces_total=faces_total,
            )

    def add(self, camera_id: str) -> None:
        """A camera a reload added (or restarted): its frames are kept from now on."""
        with self._lock:
            self._latest = {**self._latest, camera_id: None}

    def remove(self, camera_id: str) -> None:
        """A camera a reload removed: its last frame (and picture) is let go."""
        with self._lock:
            self._latest = {k: v for k, v in self._latest.items() if k != camera_id}

    def get(self, camera_id: str) -> LatestFrame | None:
        """The camera's latest frame (None before its first, or for an unknown camera)."""
        return self._latest.get(camera_id)
