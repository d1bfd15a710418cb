"""The WIDER FACE ground truth (`wider_face_val_bbx_gt.txt`), parsed strictly.

Each entry is an image name, a face count, and one line of ten integers per face (one all-zero
line after a count of 0). Any deviation is a `GroundTruthError` naming `file:line`; numbers are
bounded, so a hostile file gives one line, not an overflow deep in numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

__all__ = ["FaceAnnotations", "GroundTruthError", "read_ground_truth"]

# x y w h blur expression illumination invalid occlusion pose
_FIELDS_PER_FACE = 10
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Coordinates and counts are small integers in pixels; seven digits is far above any image and
# keeps every value exact in float64 (a 400-digit number does not convert to a float at all).
_INTEGER = re.compile(r"-?[0-9]{1,7}")
_MAX_FACES_PER_IMAGE = 100_000
# The file is read whole, so its size is bounded: the dev subset's is 227 KB, the limit is far
# above any real WIDER FACE ground truth.
_MAX_GT_BYTES = 64 * 1024 * 1024
_ECHO_CHARS = 60


class GroundTruthError(ValueError):
    """The ground-truth file is malformed; the message is `file:line: what is wrong`."""


@dataclass(frozen=True, slots=True)
class FaceAnnotations:
    """The annotated faces of one image."""

    image: str
    """Path relative to the images folder, as written in the ground-truth file."""
    boxes: NDArray[np.float64]
    """(N, 4) x_min, y_min, x_max, y_max in pixels of the original image."""


def _echo(text: str) -> str:
    """The offending text for a message: quoted, and cut so one line stays one line."""
    text = text.strip()
    if len(text) > _ECHO_CHARS:
        text = text[:_ECHO_CHARS] + "..."
    return repr(text)


def _parse_face_line(text: str, *, gt_file: Path, line_number: int) -> list[int]:
    fields = text.split()
    if len(fields) != _FIELDS_PER_FACE:
        raise GroundTruthError(
            f"{gt_file}:{line_number}: expected {_FIELDS_PER_FACE} integers "
            f"(x y w h blur expression illumination invalid occlusion pose), got {_echo(text)}"
        )
    if not all(_INTEGER.fullmatch(field) for field in fields):
        raise GroundTruthError(
            f"{gt_file}:{line_number}: face fields must be integers of at most 7 digits, "
            f"got {_echo(text)}"
        )
    values = [int(field) for field in fields]
    if values[2] < 0 or values[3] < 0:
        raise GroundTruthError(f"{gt_file}:{line_number}: negative box width or height")
    return values


def read_ground_truth(*, gt_file: Path, images_dir: Path | None = None) -> list[FaceAnnotations]:
    """Parse `wider_face_val_bbx_gt.txt`, in file order.

    With `images_dir`, only the images present in it are returned (a subset folder holds a
    sample of the images the official file annotates). Raises `GroundTruthError` naming the
    file and line of the first malformed entry.
    """
    try:
        if gt_file.stat().st_size > _MAX_GT_BYTES:
            raise GroundTruthError(
                f"{gt_file}: larger than {_MAX_GT_BYTES // 2**20} MB; not a WIDER FACE ground truth"
            )
        lines = gt_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GroundTruthError(f"{gt_file}: cannot read the ground truth: {exc}") from exc
    annotations: list[FaceAnnotations] = []
    seen: set[str] = set()
    index = 0
    while index < len(lines):
        name = lines[index].strip()
        name_line = index + 1
        index += 1
        if not name:
            continue  # blank lines between entries or at the end carry nothing
        if not name.lower().endswith(_IMAGE_SUFFIXES):
            raise GroundTruthError(
                f"{gt_file}:{name_line}: expected an image name, got {_echo(name)}"
            )
        if name in seen:
            raise GroundTruthError(f"{gt_file}:{name_line}: image {name} is annotated twice")
        seen.add(name)
        if index >= len(lines):
            raise GroundTruthError(f"{gt_file}:{name_line}: {name} has no face count line")
        count_text = lines[index].strip()
        count = int(count_text) if _INTEGER.fullmatch(count_text) else -1
        if not 0 <= count <= _MAX_FACES_PER_IMAGE:
            raise GroundTruthError(
                f"{gt_file}:{index + 1}: expected the face count of {name} "
                f"(0..{_MAX_FACES_PER_IMAGE}), got {_echo(count_text)}"
            )
        index += 1
        # The official file writes one all-zero face line after a count of 0.
        lines_to_read = max(count, 1)
        if index + lines_to_read > len(lines):
            raise GroundTruthError(
                f"{gt_file}:{len(lines)}: file ends inside the {count} faces of {name} "
                f"(entry at line {name_line})"
            )
        faces = [
            _parse_face_line(lines[index + offset], gt_file=gt_file, line_number=index + offset + 1)
            for offset in range(lines_to_read)
        ]
        index += lines_to_read
        if images_dir is not None and not (images_dir / name).is_file():
            continue
        xywh = np.array(faces[:count], dtype=np.float64).reshape(-1, _FIELDS_PER_FACE)[:, :4]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)
        annotations.append(FaceAnnotations(image=name, boxes=boxes))
    return annotations
