"""Ground-truth tracking sequences: real faces moving over a real background on known paths.

Tracking quality needs sequences whose every face has a known identity and box in every
frame; hand-labelled videos are not available here, so they are made: faces are cut from
real frames (where the detector finds them, with a margin and a soft elliptical alpha edge,
so a paste shows no hard rectangle), then pasted over an empty real frame along scripted
paths. A face's ground-truth box is the detector's box of its crop, moved and scaled with the
paste, so the truth is what the detector would say of the original face.

Everything is a pure function of its inputs (no randomness at all), so a sequence is the same
on every run. `edge_facedet.tools.trackscore` runs the detector and tracker over these.
"""

from __future__ import annotations

import itertools
import math
import os
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
    "Actor",
    "Box",
    "FaceFinder",
    "FaceSprite",
    "GroundTruthFace",
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

FACE_VIDEOS = (
    Path("videos/openmpf_video_01_event_faces_640x480.mp4"),
    Path("videos/openmpf_video_02_hikers_walking_640x480.mp4"),
)
"""Relative to the shared media folder (`default_media_root`)."""
BACKGROUND_VIDEO = Path("sample-videos/one-by-one-person-detection.mp4")
"""Its first frame shows the room before anybody walks in."""

MIN_VISIBLE = 0.5
"""A face counts in the ground truth while at least this share of its box is visible (not off
the frame, not behind a face pasted over it). A face less visible is still listed, so scoring
can treat it as "don't care" (MOT's distractor rule): a tracker neither must nor must not
report a face that is mostly hidden."""

Box = tuple[float, float, float, float]
"""x_min, y_min, x_max, y_max in pixels."""


def default_media_root() -> Path:
    """$EDGE_FACEDET_SHARED/media, else the `shared/media` folder beside the checkout."""
    shared = os.environ.get("EDGE_FACEDET_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[3] / "shared"
    return root / "media"


class FaceFinder(Protocol):
    """The detector, as the harvest needs it: the faces in one BGR frame."""

    def __call__(self, image: NDArray[np.uint8], /) -> Detections: ...


# --- faces cut from real frames -------------------------------------------------------------


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


# --- scripted paths -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Waypoint:
    """Where a face's box centre is at time `t`, and how tall its box is."""

    t: float
    x: float
    y: float
    height: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """One ground-truth identity: a sprite moving linearly between waypoints.

    Before the first and after the last waypoint the face is not in the scene. Actors later
    in a scenario's list are pasted over earlier ones (nearer the camera)."""

    gt_id: int
    sprite: int
    """Index into the sprite list (wrapped)."""
    path: tuple[Waypoint, ...]

    def at(self, t: float) -> Waypoint | None:
        path = self.path
        if not path or t < path[0].t or t > path[-1].t:
            return None
        for start, end in itertools.pairwise(path):
            if start.t <= t <= end.t:
                span = end.t - start.t
                f = 0.0 if span <= 0 else (t - start.t) / span
                return Waypoint(
                    t=t,
                    x=start.x + (end.x - start.x) * f,
                    y=start.y + (end.y - start.y) * f,
                    height=start.height + (end.height - start.height) * f,
                )
        return path[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    actors: tuple[Actor, ...]
    note: str = ""
    """What a reader of the scores should know (e.g. why an id switch is expected)."""
    key_t: float | None = None
    """The moment worth a picture (the crossing, the return); None: half-way."""

    @property
    def key_time(self) -> float:
        return self.duration_s / 2 if self.key_t is None else self.key_t


def _line(*points: tuple[float, float, float, float]) -> tuple[Waypoint, ...]:
    return tuple(Waypoint(t=t, x=x, y=y, height=h) for t, x, y, h in points)


def crossing(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """Two faces on an X: their paths cross mid-way, the second passing in front."""
    d, w, h = duration_s, width, height
    return Scenario(
        name="crossing",
        description="two faces crossing (X paths, one passes in front of the other)",
        duration_s=d,
        key_t=0.56 * d,
        actors=(
            Actor(
                gt_id=1,
                sprite=0,
                path=_line((0, 0.12 * w, 0.30 * h, 90), (d, 0.88 * w, 0.50 * h, 90)),
            ),
            Actor(
                gt_id=2,
                sprite=1,
                path=_line((0, 0.88 * w, 0.55 * h, 95), (d, 0.12 * w, 0.35 * h, 95)),
            ),
        ),
    )


def leave_and_return(
    *,
    width: int,
    height: int,
    away_s: float = 1.0,
    start: float = 0.45,
    name: str = "leave_and_return",
) -> Scenario:
    """One face walks out of the right edge, stays out for about `away_s` and walks back in.

    It starts (and ends) at `start` of the frame's width. The ground truth keeps its one id
    throughout; a tracker that gives it a new id on its return makes an id switch by the MOT
    rules."""
    w, h = width, height
    face_h, speed = 90.0, 150.0
    start_x, gone = start * w, w + 0.8 * face_h  # gone: the whole crop is off the frame
    walk = (gone - start_x) / speed
    hidden_s = max(0.0, away_s - 2 * (gone - w) / speed)  # time fully out, beyond the walk
    t_out, t_back = walk, walk + hidden_s
    d = t_back + walk + 0.6
    return Scenario(
        name=name,
        description=f"one face leaves the frame and comes back (~{away_s:g} s out of view)",
        duration_s=d,
        key_t=t_back + 0.8 * walk,
        actors=(
            Actor(
                gt_id=1,
                sprite=0,
                path=_line(
                    (0, start_x, 0.42 * h, face_h),
                    (t_out, gone, 0.45 * h, face_h),
                    (t_back, gone, 0.45 * h, face_h),
                    (t_back + walk, start_x, 0.42 * h, face_h),
                    (d, start_x, 0.42 * h, face_h),
                ),
            ),
        ),
        note=(
            "GT keeps one id; a new tracker id after the absence counts as an id switch "
            "(MOT rules), so IDF1 falls when the tracker does not re-associate."
        ),
    )


def passing_close(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """Two faces passing each other on parallel lines: their boxes overlap, neither hides."""
    d, w, h = duration_s, width, height
    face_h = 95.0
    return Scenario(
        name="passing_close",
        description="two faces passing close (boxes overlap at the pass, the lower face in front)",
        duration_s=d,
        actors=(
            Actor(
                gt_id=1,
                sprite=2,
                path=_line((0, 0.1 * w, 0.38 * h, face_h), (d, 0.9 * w, 0.38 * h, face_h)),
            ),
            Actor(
                gt_id=2,
                sprite=3,
                path=_line(
                    (0, 0.9 * w, 0.38 * h + 0.7 * face_h, face_h),
                    (d, 0.1 * w, 0.38 * h + 0.7 * face_h, face_h),
                ),
            ),
        ),
    )


def edge_occlusion(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """One face drifting in and out of the left edge: at times only part of it is in view."""
    d, h = duration_s, height
    fw = 75.0  # about the box width of a 90 px tall face
    del width
    return Scenario(
        name="edge_occlusion",
        description="a face partly cut off by the frame's left edge (down to about 40 % visible)",
        duration_s=d,
        key_t=0.3 * d,
        actors=(
            Actor(
                gt_id=1,
                sprite=1,
                path=_line(
                    (0, 2.0 * fw, 0.40 * h, 90),
                    (0.25 * d, 0.15 * fw, 0.45 * h, 90),
                    (0.45 * d, -0.1 * fw, 0.48 * h, 90),
                    (0.65 * d, 0.3 * fw, 0.50 * h, 90),
                    (0.8 * d, 1.2 * fw, 0.48 * h, 90),
                    (d, 0.05 * fw, 0.45 * h, 90),
                ),
            ),
        ),
    )


def approaching(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """A face walking toward the camera: its box grows from small to large."""
    d, w, h = duration_s, width, height
    return Scenario(
        name="approaching",
        description="a face walking toward the camera (box height 50 -> 190 px)",
        duration_s=d,
        key_t=0.8 * d,
        actors=(
            Actor(
                gt_id=1,
                sprite=0,
                path=_line((0, 0.38 * w, 0.32 * h, 50), (d, 0.52 * w, 0.52 * h, 190)),
            ),
        ),
    )


def three_faces(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """Three faces at once, on different paths and at different sizes."""
    d, w, h = duration_s, width, height
    return Scenario(
        name="three_faces",
        description="three faces at once (different paths and sizes)",
        duration_s=d,
        actors=(
            Actor(
                gt_id=1,
                sprite=0,
                path=_line((0, 0.12 * w, 0.25 * h, 80), (d, 0.75 * w, 0.30 * h, 80)),
            ),
            Actor(
                gt_id=2,
                sprite=1,
                path=_line((0, 0.85 * w, 0.70 * h, 105), (d, 0.25 * w, 0.65 * h, 105)),
            ),
            Actor(
                gt_id=3,
                sprite=2,
                path=_line((0, 0.50 * w, 0.22 * h, 70), (d, 0.45 * w, 0.75 * h, 75)),
            ),
        ),
    )


def standard_scenarios(*, width: int, height: int) -> tuple[Scenario, ...]:
    """Every scenario at full length: what `trackscore` reports."""
    w, h = width, height
    return (
        crossing(width=w, height=h),
        leave_and_return(width=w, height=h),
        leave_and_return(width=w, height=h, away_s=3.0, name="leave_and_return_long"),
        passing_close(width=w, height=h),
        edge_occlusion(width=w, height=h),
        approaching(width=w, height=h),
        three_faces(width=w, height=h),
    )


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
