"""The inputs of `edge-facedet detect`: PATH arguments expanded into media files.

Owns which suffixes name images and videos, the walk of a folder, and each file's annotated
copy name (unique across the run, so two inputs never share a copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet.tools.annotate import annotated_name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "MediaFile", "expand_paths", "media_kind"]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2"}
    | {".pbm", ".pgm", ".ppm", ".pnm", ".ras", ".sr", ".exr", ".hdr", ".pic", ".avif"}
)
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".avi", ".gif", ".mov", ".webm", ".mpg", ".mpeg", ".ts"}
    | {".mts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".hevc"}
)


@dataclass(frozen=True, slots=True)
class MediaFile:
    """One input file, and where its annotated copy goes (relative to the output folder)."""

    path: Path
    is_video: bool
    annotated_name: Path


def media_kind(path: Path) -> bool | None:
    """True for a video, False for an image, None when the suffix names neither."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES:
        return False
    return None


def expand_paths(*, paths: Sequence[Path], report: Callable[[Path, str], None]) -> list[MediaFile]:
    """Files in argument order; a folder contributes its images and videos, recursively
    and sorted. Paths that are neither are given to `report` and skipped."""
    media: list[MediaFile] = []
    used: set[Path] = set()

    def add(path: Path, relative: Path, *, is_video: bool) -> None:
        name = annotated_name(relative, is_video=is_video)
        # Two inputs with one name (e.g. a.jpg given twice, or a.png next to a.bmp) must
        # not overwrite each other's annotated copy.
        candidate, n = name, 1
        while candidate in used:
            candidate = name.with_name(f"{name.stem}-{n}{name.suffix}")
            n += 1
        used.add(candidate)
        media.append(MediaFile(path=path, is_video=is_video, annotated_name=candidate))

    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and media_kind(p) is not None)
            for file in found:
                add(file, file.relative_to(path), is_video=bool(media_kind(file)))
        elif path.is_file():
            # A file named explicitly is tried even with an unknown suffix: as a video when
            # OpenCV cannot read it as an image.
            kind = media_kind(path)
            add(path, Path(path.name), is_video=bool(kind))
        elif path.exists():
            # A FIFO or a device would block or never end; only regular files are read.
            report(path, "not a regular file or folder")
        else:
            report(path, "no such file or folder")
    return media
