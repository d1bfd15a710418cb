"""Ground-truth tracking sequences: real faces moving over a real background on known paths.

Tracking quality needs sequences whose every face has a known identity and box in every
frame; hand-labelled videos are not available here, so they are made: faces are cut from
real frames (where the detector finds them, with a margin and a soft elliptical alpha edge,
so a paste shows no hard rectangle), then pasted over an empty real frame along scripted
paths. A face's ground-truth box is the detector's box of its crop, moved and scaled with the
paste, so the truth is what the detector would say of the original face.

Everything is a pure function of its inputs (no randomness at all), so a sequence is the same
on every run. `edge_facedet.tools.trackscore` runs the detector and tracker over these. The
sprites come from `tracksynth_sprites`, the scripted paths from `tracksynth_scenes`; this
module renders them and says, frame by frame, which faces are there and how much is in view.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

# Re-exported: this module is the one entry point to the sequences.
from edge_facedet.tools.tracksynth_scenes import (
    Actor,
    Scenario,
    Waypoint,
    approaching,
    crossing,
    edge_occlusion,
    leave_and_return,
    passing_close,
    standard_scenarios,
    three_faces,
)
from edge_facedet.tools.tracksynth_sprites import (
    BACKGROUND_VIDEO,
    FACE_VIDEOS,
    Box,
    FaceFinder,
    FaceSprite,
    HarvestRules,
    harvest_sprites,
    load_background,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

__all__ = [
    "BACKGROUND_VIDEO",
    "FACE_VIDEOS",
    "Actor",
    "Box",
    "FaceFinder",
    "FaceSprite",
    "GroundTruthFace",
    "HarvestRules",
    "Scenario",
    "SequenceFrame",
    "SyntheticSequence",
    "Waypoint",
    "approaching",
    "crossing",
    "default_media_root",
    "edge_occlusion",
    "harvest_sprites",
    "leave_and_return",
    "load_background",
    "passing_close",
    "standard_scenarios",
    "three_faces",
]

MIN_VISIBLE = 0.5
"""A face counts in the ground truth while at least this share of its box is visible (not off
the frame, not behind a face pasted over it). A face less visible is still listed, so scoring
can treat it as "don't care" (MOT's distractor rule): a tracker neither must nor must not
report a face that is mostly hidden."""


def default_media_root() -> Path:
    """$EDGE_FACEDET_SHARED/media, else the `shared/media` folder beside the checkout."""
    shared = os.environ.get("EDGE_FACEDET_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared"
    return root / "media"


# --- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GroundTruthFace:
    gt_id: int
    box: Box
    """Clipped to the frame."""
    visible: float
    """Share of the (unclipped) box in view: off-frame and covered parts excluded."""

    @property
    def counted(self) -> bool:
        """Whether a tracker must find it (`MIN_VISIBLE`); else it is "don't care"."""
        return self.visible >= MIN_VISIBLE


@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceFrame:
    index: int
    t: float
    image: NDArray[np.uint8]
    faces: tuple[GroundTruthFace, ...]


@dataclass(frozen=True, slots=True)
class _Placement:
    """A sprite scaled and positioned in the frame."""

    gt_id: int
    pixels: NDArray[np.uint8]
    alpha: NDArray[np.float32]
    x0: int
    y0: int
    face_box: Box
    """Unclipped, in frame pixels."""


def _place(actor: Actor, sprite: FaceSprite, where: Waypoint) -> _Placement:
    scale = where.height / sprite.face_height
    src_h, src_w = sprite.alpha.shape
    out_w, out_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    sx, sy = out_w / src_w, out_h / src_h  # the scale the resize really applies
    fx1, fy1, fx2, fy2 = sprite.face_box
    x0 = round(where.x - sx * (fx1 + fx2) / 2)
    y0 = round(where.y - sy * (fy1 + fy2) / 2)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return _Placement(
        gt_id=actor.gt_id,
        pixels=np.asarray(cv2.resize(sprite.pixels, (out_w, out_h), interpolation=interpolation)),
        alpha=np.asarray(cv2.resize(sprite.alpha, (out_w, out_h), interpolation=interpolation)),
        x0=x0,
        y0=y0,
        face_box=(x0 + sx * fx1, y0 + sy * fy1, x0 + sx * fx2, y0 + sy * fy2),
    )


def _overlap(p: _Placement, width: int, height: int) -> tuple[slice, slice, slice, slice] | None:
    """(frame rows, frame cols, sprite rows, sprite cols) of the part of `p` in the frame."""
    ph, pw = p.alpha.shape
    fx1, fy1 = max(p.x0, 0), max(p.y0, 0)
    fx2, fy2 = min(p.x0 + pw, width), min(p.y0 + ph, height)
    if fx1 >= fx2 or fy1 >= fy2:
        return None
    return (
        slice(fy1, fy2),
        slice(fx1, fx2),
        slice(fy1 - p.y0, fy2 - p.y0),
        slice(fx1 - p.x0, fx2 - p.x0),
    )


def _visible_share(index: int, placements: Sequence[_Placement], width: int, height: int) -> float:
    """Share of placement `index`'s face box that is in the frame and not under a later one."""
    x1, y1, x2, y2 = placements[index].face_box
    area = (x2 - x1) * (y2 - y1)
    bx1, by1 = max(math.floor(x1), 0), max(math.floor(y1), 0)
    bx2, by2 = min(math.ceil(x2), width), min(math.ceil(y2), height)
    if area <= 0 or bx1 >= bx2 or by1 >= by2:
        return 0.0
    seen = np.ones((by2 - by1, bx2 - bx1), np.float32)
    for later in placements[index + 1 :]:
        cover = np.zeros((height, width), np.float32)
        region = _overlap(later, width, height)
        if region is None:
            continue
        rows, cols, srows, scols = region
        cover[rows, cols] = later.alpha[srows, scols]
        seen *= 1.0 - cover[by1:by2, bx1:bx2]
    # The whole-pixel region can exceed the box by a fraction of a pixel each side.
    return min(1.0, float(seen.sum()) / area)


def _clip(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


class SyntheticSequence:
    """A scenario rendered at `fps` over a background: frames and their ground truth."""

    def __init__(
        self,
        *,
        scenario: Scenario,
        sprites: Sequence[FaceSprite],
        background: NDArray[np.uint8],
        fps: float = 10.0,
    ) -> None:
        if not sprites:
            raise ValueError("no sprites")
        self.scenario = scenario
        self.fps = fps
        self._sprites = list(sprites)
        self._background = background
        self.height, self.width = background.shape[:2]

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def frame_count(self) -> int:
        return math.floor(self.scenario.duration_s * self.fps + 1e-9) + 1

    def _placements(self, t: float) -> list[_Placement]:
        placements = []
        for actor in self.scenario.actors:
            where = actor.at(t)
            if where is not None:
                sprite = self._sprites[actor.sprite % len(self._sprites)]
                placements.append(_place(actor, sprite, where))
        return placements

    def _faces(self, placements: Sequence[_Placement]) -> tuple[GroundTruthFace, ...]:
        faces = []
        for i, placement in enumerate(placements):
            visible = _visible_share(i, placements, self.width, self.height)
            if visible > 0.0:
                box = _clip(placement.face_box, self.width, self.height)
                faces.append(GroundTruthFace(gt_id=placement.gt_id, box=box, visible=visible))
        return tuple(faces)

    def ground_truth(self, index: int) -> tuple[GroundTruthFace, ...]:
        """The faces of frame `index` without rendering its picture."""
        return self._faces(self._placements(index / self.fps))

    def frame(self, index: int) -> SequenceFrame:
        """Frame `index` (time index / fps) rendered, with its ground truth."""
        t = index / self.fps
        placements = self._placements(t)
        canvas = self._background.astype(np.float32)
        for p in placements:
            region = _overlap(p, self.width, self.height)
            if region is None:
                continue
            rows, cols, srows, scols = region
            alpha = p.alpha[srows, scols, None]
            canvas[rows, cols] = canvas[rows, cols] * (1.0 - alpha) + p.pixels[srows, scols] * alpha
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return SequenceFrame(index=index, t=t, image=image, faces=self._faces(placements))
