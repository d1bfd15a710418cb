"""Whether a camera has faces in view: written by the result pipeline, read by its reader.

The one thing that flows backwards from the outputs to a reader thread: while a camera's
latest detections held a face or its tracks are open, its motion gate sends every due frame
to the detector, so a face that is already followed is followed at the camera's detect rate
even when it barely moves.
"""

from __future__ import annotations

__all__ = ["CameraActivity"]


class CameraActivity:
    """One camera's "faces in view" flag, shared by the event loop and the reader thread.

    One writer (the loop, after each processed frame) and one reader (the reader thread, at
    each due frame). Rebinding one attribute to a bool is atomic in Python, and a reader
    that sees the flag one frame late sends or gates one frame more or less, so no lock.
    """

    __slots__ = ("_faces_in_view",)

    def __init__(self) -> None:
        self._faces_in_view = False

    @property
    def faces_in_view(self) -> bool:
        return self._faces_in_view

    def update(self, *, faces: int, open_tracks: int) -> None:
        """After a processed frame: its faces and the camera's open tracks."""
        self._faces_in_view = faces > 0 or open_tracks > 0
