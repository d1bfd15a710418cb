"""Faces cut from real frames for `edge_facedet.tools.tracksynth` to paste along scripted paths.

The detector finds the faces; each becomes a sprite with a margin and a soft elliptical alpha
edge, so a paste shows no hard rectangle, and keeps the detector's box of the face as its
ground truth. The harvest is a pure function of the videos and the detector: the same
sprites on every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from numpy.typing import NDArray

    from edge_facedet.frames import Detections

__all__ = [
    "BACKGROUND_VIDEO",
    "FACE_VIDEOS",
    "Box",
    "FaceFinder",
    "FaceSprite",
    "HarvestRules",
    "harvest_sprites",
    "load_background",
]

FACE_VIDEOS = (
    Path("videos/openmpf_video_01_event_faces_640x480.mp4"),
    Path("videos/openmpf_video_02_hikers_walking_640x480.mp4"),
)
"""Relative to the shared media folder (`tracksynth.default_media_root`)."""
BACKGROUND_VIDEO = Path("sample-videos/one-by-one-person-detection.mp4")
"""Its first frame shows the room before anybody walks in."""

Box = tuple[float, float, float, float]
"""x_min, y_min, x_max, y_max in pixels."""


class FaceFinder(Protocol):
    """The detector, as the harvest needs it: the faces in one BGR frame."""

    def __call__(self, image: NDArray[np.uint8], /) -> Detections: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FaceSprite:
    """A face cut from a real frame, ready to paste."""

    pixels: NDArray[np.uint8]
    """HxWx3 BGR: the face with a margin around it."""
    alpha: NDArray[np.float32]
    """HxW in [0, 1]: 1 over the face, fading to 0 at the crop's edge."""
    face_box: Box
    """The detector's box of the face, in the crop's pixels."""
    source: str
    """`video-file#frame`, to say where a face came from."""

    @property
    def face_height(self) -> float:
        return self.face_box[3] - self.face_box[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestRules:
    """Which detections make good sprites."""

    min_confidence: float = 0.95
    min_height_px: float = 60.0
    margin: float = 0.45
    """Crop margin each side, as a share of the face box's width (height for top/bottom)."""
    frame_stride: int = 15
    """Every how many video frames the detector looks (neighbouring frames repeat faces)."""
    min_frame_gap: int = 90
    """Two sprites from one video are this many frames apart, or far apart in the frame,
    so the same person is not cut twice."""


def _soft_ellipse(height: int, width: int, *, feather: float = 0.25) -> NDArray[np.float32]:
    """1 inside (1 - feather) of the crop's inscribed ellipse, fading linearly to 0 at it.

    With the default margin the face box's corners lie inside the opaque part, so the face
    itself is never faded, only its surroundings."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height * 2.0 - 1.0
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0
    radius = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return np.clip((1.0 - radius) / feather, 0.0, 1.0).astype(np.float32)


def _crop_sprite(
    *, frame: NDArray[np.uint8], box: Box, others: Sequence[Box], rules: HarvestRules, source: str
) -> FaceSprite | None:
    """The sprite of one detection, or None when its crop leaves the frame or holds another
    face (which would be pasted along as an unlabelled face)."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * rules.margin, (y2 - y1) * rules.margin
    cx1, cy1 = math.floor(x1 - mx), math.floor(y1 - my)
    cx2, cy2 = math.ceil(x2 + mx), math.ceil(y2 + my)
    height, width = frame.shape[:2]
    if cx1 < 0 or cy1 < 0 or cx2 > width or cy2 > height:
        return None
    for ox1, oy1, ox2, oy2 in others:
        if ox1 < cx2 and ox2 > cx1 and oy1 < cy2 and oy2 > cy1:
            return None
    pixels = np.ascontiguousarray(frame[cy1:cy2, cx1:cx2])
    return FaceSprite(
        pixels=pixels,
        alpha=_soft_ellipse(cy2 - cy1, cx2 - cx1),
        face_box=(x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1),
        source=source,
    )


@dataclass(frozen=True, slots=True)
class _Candidate:
    video: int
    frame: int
    box: Box
    source: str
    sprite: FaceSprite | None = None


def _is_new_person(candidate: _Candidate, kept: Sequence[_Candidate], rules: HarvestRules) -> bool:
    for other in kept:
        if other.video != candidate.video or abs(other.frame - candidate.frame) >= (
            rules.min_frame_gap
        ):
            continue
        width = candidate.box[2] - candidate.box[0]
        dx = (candidate.box[0] + candidate.box[2] - other.box[0] - other.box[2]) / 2
        dy = (candidate.box[1] + candidate.box[3] - other.box[1] - other.box[3]) / 2
        if math.hypot(dx, dy) < 3 * width:
            return False
    return True


def _sampled_frames(path: Path, *, stride: int) -> Iterator[tuple[int, NDArray[np.uint8]]]:
    """Every `stride`-th frame of a video with its index; ValueError if it cannot be opened."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open {path}")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield index, np.asarray(frame, np.uint8)
            for _ in range(stride - 1):
                index += 1
                if not capture.grab():  # grab() skips the conversion of frames not used
                    return
            index += 1
    finally:
        capture.release()


def harvest_sprites(
    *,
    find_faces: FaceFinder,
    media: Path,
    videos: Sequence[Path] = FACE_VIDEOS,
    count: int = 6,
    rules: HarvestRules | None = None,
) -> list[FaceSprite]:
    """Up to `count` faces of different people from `videos` (under `media`), largest first
    (the same list on every run).

    Raises ValueError when a video cannot be read or no face qualifies.
    """
    rules = rules or HarvestRules()
    candidates: list[_Candidate] = []
    for video_index, video in enumerate(videos):
        for index, frame in _sampled_frames(media / video, stride=rules.frame_stride):
            where = _Candidate(video_index, index, (0.0, 0.0, 0.0, 0.0), f"{video.name}#{index}")
            candidates.extend(
                _frame_candidates(find_faces=find_faces, frame=frame, where=where, rules=rules)
            )
    candidates.sort(key=lambda c: (-(c.box[3] - c.box[1]), c.video, c.frame))
    kept: list[_Candidate] = []
    for candidate in candidates:
        if len(kept) == count:
            break
        if _is_new_person(candidate, kept, rules):
            kept.append(candidate)
    if not kept:
        raise ValueError("no face in the videos qualifies as a sprite")
    return [candidate.sprite for candidate in kept if candidate.sprite is not None]


def _frame_candidates(
    *, find_faces: FaceFinder, frame: NDArray[np.uint8], where: _Candidate, rules: HarvestRules
) -> list[_Candidate]:
    """The sprites one frame offers; `where` names the frame (its box and sprite unused)."""
    faces = find_faces(frame)
    boxes = [_as_box(row) for row in faces.boxes_px.tolist()]
    found = []
    for i, (box, confidence) in enumerate(zip(boxes, faces.confidences.tolist(), strict=True)):
        if confidence < rules.min_confidence or box[3] - box[1] < rules.min_height_px:
            continue
        sprite = _crop_sprite(
            frame=frame,
            box=box,
            others=boxes[:i] + boxes[i + 1 :],
            rules=rules,
            source=where.source,
        )
        if sprite is not None:
            found.append(_Candidate(where.video, where.frame, box, where.source, sprite))
    return found


def _as_box(row: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in row)
    return (x1, y1, x2, y2)


def load_background(*, media: Path, video: Path = BACKGROUND_VIDEO) -> NDArray[np.uint8]:
    """The first frame of `video` under `media` (the default's shows an empty room)."""
    video = media / video
    capture = cv2.VideoCapture(str(video))
    try:
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise ValueError(f"cannot read a frame of {video}")
    return np.asarray(frame, np.uint8)
