"""Annotated copies for `edge-facedet detect --annotate`: boxes drawn, images and videos written.

Owns where a copy goes (its name under the output folder), drawing each face's box and
confidence on a frame, and writing the frames out: an image per image, one MP4 per video.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from numpy.typing import NDArray

    from edge_facedet.frames import Detections

__all__ = [
    "AnnotatedFrame",
    "Annotator",
    "annotated_name",
    "draw_faces",
    "out_dir_problem",
    "overwritten_input",
]

# Annotated images keep their name when OpenCV writes that format losslessly or as the
# input did; anything else (bmp, tiff, ...) becomes a PNG so the copy is easy to view.
_KEPT_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})

_BOX_COLOUR = (0, 255, 0)  # BGR green
_LABEL_COLOUR = (0, 0, 0)


def annotated_name(relative: Path, *, is_video: bool) -> Path:
    """The copy's path under the output folder, for an input at `relative`."""
    if is_video:
        return relative.with_suffix(".mp4")
    if relative.suffix.lower() in _KEPT_IMAGE_SUFFIXES:
        return relative
    return relative.with_suffix(".png")


def overwritten_input(*, inputs: Iterable[Path], copies: Iterable[Path]) -> Path | None:
    """The first copy that would be written over one of the inputs, or None.

    Compared by resolved path (a copy not written yet, symlinked folders) and by device and
    inode (an existing copy that is a hard or symbolic link to an input). An annotated video
    written over its own input truncates it while it is still being read.
    """
    originals = list(inputs)
    resolved = {path.resolve() for path in originals}
    identities: set[tuple[int, int]] = set()
    for path in originals:
        try:
            stat = path.stat()
        except OSError:
            continue  # reported as missing or unreadable by the caller
        identities.add((stat.st_dev, stat.st_ino))
    for copy in copies:
        if copy.resolve() in resolved:
            return copy
        try:
            stat = copy.stat()
        except OSError:
            continue  # does not exist yet (or cannot be written: found when writing)
        if (stat.st_dev, stat.st_ino) in identities:
            return copy
    return None


def out_dir_problem(out_dir: Path, *, inputs: Sequence[Path], copies: Iterable[Path]) -> str | None:
    """Why the copies (relative to `out_dir`) cannot go there, or None after creating it.

    Refused before anything is written: a copy that would overwrite one of the `inputs`,
    and a folder that is a file, cannot be created or is not writable.
    """
    clobbered = overwritten_input(inputs=inputs, copies=[out_dir / copy for copy in copies])
    if clobbered is not None:
        return f"the copy {clobbered} would overwrite an input file; choose a folder apart"
    if out_dir.exists() and not out_dir.is_dir():
        return "exists and is not a folder"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the folder: {exc.strerror or type(exc).__name__}"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return "the folder is not writable"
    return None


class _AnnotatedMedia(Protocol):
    @property
    def is_video(self) -> bool: ...

    @property
    def annotated_name(self) -> Path:
        """Relative to the output folder."""
        ...


class AnnotatedFrame(Protocol):
    """What the annotator needs of a decoded frame (`edge_facedet.tools.detect` has one)."""

    @property
    def media(self) -> _AnnotatedMedia: ...

    @property
    def image(self) -> NDArray[np.uint8]:
        """The original frame, full size."""
        ...

    @property
    def last(self) -> bool:
        """The last frame of its file: the video writer is closed after it."""
        ...

    @property
    def fps(self) -> float:
        """Videos: the rate the copy plays at."""
        ...


class Annotator:
    """Writes annotated copies; called from a worker thread, one frame at a time, in order."""

    def __init__(self, out_dir: Path) -> None:
        self._out_dir = out_dir
        self._writer: cv2.VideoWriter | None = None
        self._writing: Path | None = None

    def add(self, decoded: AnnotatedFrame, faces: Detections) -> str | None:
        """Draw and write one frame; returns an error message, or None."""
        image = draw_faces(image=decoded.image, faces=faces)
        target = self._out_dir / decoded.media.annotated_name
        if self._writing != target:
            # A video that ended without its `last` frame (a decode error) is closed here,
            # so the next file's frames never go into its copy.
            self.close()
            try:  # a new file: its folder may not exist yet
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"cannot write {target}: {exc.strerror or type(exc).__name__}"
        if not decoded.media.is_video:
            return None if cv2.imwrite(str(target), image) else f"cannot write {target}"
        if self._writer is None:
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(target), fourcc, decoded.fps, (width, height))
            if not self._writer.isOpened():
                self._writer = None
                return f"cannot write {target}"
            self._writing = target
        self._writer.write(image)
        if decoded.last:
            self.close()
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
        self._writer = None
        self._writing = None


def draw_faces(*, image: NDArray[np.uint8], faces: Detections) -> NDArray[np.uint8]:
    """A copy of `image` with each face's box and confidence drawn on it."""
    canvas = image.copy()
    # Line width and text scale follow the frame size so labels stay legible on 1080p.
    thickness = max(1, round(max(image.shape[:2]) / 320))
    scale = max(0.4, max(image.shape[:2]) / 1280)
    corners = np.rint(faces.boxes_px).astype(np.int32)
    # OpenCV draws one rectangle per call; this loop is per face on the annotation path
    # only, not per candidate row on the inference path.
    for (x0, y0, x1, y1), confidence in zip(
        corners.tolist(), faces.confidences.tolist(), strict=True
    ):
        cv2.rectangle(canvas, (x0, y0), (x1, y1), _BOX_COLOUR, thickness)
        label = f"{confidence:.2f}"
        (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(y0 - text_h - base, 0)
        cv2.rectangle(canvas, (x0, top), (x0 + text_w, top + text_h + base), _BOX_COLOUR, -1)
        cv2.putText(
            canvas,
            label,
            (x0, top + text_h),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            _LABEL_COLOUR,
            1,
            cv2.LINE_AA,
        )
    return canvas
