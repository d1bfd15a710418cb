"""The scripted scenes of `edge_facedet.tools.tracksynth`: who walks where, and when.

A scenario is data only (identities, sprite indices, waypoints in frame pixels), so the
renderer and the scoring both read the same script, and a scene is the same on every run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = [
    "Actor",
    "Scenario",
    "Waypoint",
    "approaching",
    "crossing",
    "edge_occlusion",
    "leave_and_return",
    "passing_close",
    "standard_scenarios",
    "three_faces",
]


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


_Spot = tuple[float, float, float]
"""x, y of the box centre and the box height."""


def _walkers(*lines: tuple[int, _Spot, _Spot], end_t: float) -> tuple[Actor, ...]:
    """Actors on straight lines, one per `(sprite, start, end)`: at `start` at t = 0, at `end`
    at `end_t`. Their ids count from 1 in the order given (the later, the nearer)."""
    return tuple(
        Actor(gt_id=gt_id, sprite=sprite, path=_line((0, *start), (end_t, *end)))
        for gt_id, (sprite, start, end) in enumerate(lines, start=1)
    )


def crossing(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """Two faces on an X: their paths cross mid-way, the second passing in front."""
    d, w, h = duration_s, width, height
    return Scenario(
        name="crossing",
        description="two faces crossing (X paths, one passes in front of the other)",
        duration_s=d,
        key_t=0.56 * d,
        actors=_walkers(
            (0, (0.12 * w, 0.30 * h, 90), (0.88 * w, 0.50 * h, 90)),
            (1, (0.88 * w, 0.55 * h, 95), (0.12 * w, 0.35 * h, 95)),
            end_t=d,
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
    lower_y = 0.38 * h + 0.7 * face_h
    return Scenario(
        name="passing_close",
        description="two faces passing close (boxes overlap at the pass, the lower face in front)",
        duration_s=d,
        actors=_walkers(
            (2, (0.1 * w, 0.38 * h, face_h), (0.9 * w, 0.38 * h, face_h)),
            (3, (0.9 * w, lower_y, face_h), (0.1 * w, lower_y, face_h)),
            end_t=d,
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
        actors=_walkers(
            (0, (0.38 * w, 0.32 * h, 50), (0.52 * w, 0.52 * h, 190)),
            end_t=d,
        ),
    )


def three_faces(*, width: int, height: int, duration_s: float = 8.0) -> Scenario:
    """Three faces at once, on different paths and at different sizes."""
    d, w, h = duration_s, width, height
    return Scenario(
        name="three_faces",
        description="three faces at once (different paths and sizes)",
        duration_s=d,
        actors=_walkers(
            (0, (0.12 * w, 0.25 * h, 80), (0.75 * w, 0.30 * h, 80)),
            (1, (0.85 * w, 0.70 * h, 105), (0.25 * w, 0.65 * h, 105)),
            (2, (0.50 * w, 0.22 * h, 70), (0.45 * w, 0.75 * h, 75)),
            end_t=d,
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
