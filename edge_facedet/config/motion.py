"""Motion-gated detection (`motion:`, per camera or in `defaults`).

A camera whose scene is still skips the detector: a due frame goes to it only when the
motion detector (edge_facedet.sources.motion) sees a change, while the camera has faces or
open tracks, or every `recheck_interval_s` (a face that never moved is still found).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from edge_facedet.config.base import MIN_TIMEOUT_S, StrictModel
from edge_facedet.config.errors import field_error

Coordinate = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Coordinate, Coordinate]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=64)]


class MotionConfig(StrictModel):
    """When a camera's due frames may skip the detector, and how motion is told from noise."""

    enabled: bool = Field(
        default=True,
        description="Skip the detector for due frames without motion, faces or open tracks "
        "(see README, motion gating, for what it saves and misses).",
    )
    recheck_interval_s: float = Field(
        default=2.0,
        ge=MIN_TIMEOUT_S,
        le=600,
        description="A due frame goes to the detector at least this often, motion or not, so "
        "a face that never moved is still found (0.1..600 s); <= publish.heartbeat_s with "
        "publish policy on_change, whose heartbeats come from these frames.",
    )
    threshold: int = Field(
        default=25,
        ge=1,
        le=255,
        description="Grey levels a pixel of the blurred small picture must differ from the "
        "background by to count as changed (1..255).",
    )
    min_area: float = Field(
        default=0.002,
        ge=0.0001,
        le=0.5,
        description="Share of the watched picture (inside roi, outside masks) that must change "
        "to be motion (0.0001..0.5).",
    )
    recalibrate_area: float = Field(
        default=0.5,
        ge=0.05,
        le=1.0,
        description="A change of at least this share of the watched picture at once is taken "
        "for a lighting step (auto-exposure, lights, IR switch): the background is reset "
        "instead of reporting motion (0.05..1); > min_area.",
    )
    background_s: float = Field(
        default=2.0,
        ge=MIN_TIMEOUT_S,
        le=600,
        description="Time constant of the running-average background: how fast a change "
        "that stays (a parked car, slow daylight) stops being motion (0.1..600 s).",
    )
    height_px: int = Field(
        default=120,
        ge=48,
        le=480,
        description="Height of the small grey picture motion is measured on (48..480 px).",
    )
    masks: Annotated[list[Polygon], Field(min_length=0, max_length=32)] = Field(
        default_factory=list,
        description="Polygons whose motion is ignored (a tree, a clock, a screen), each 3..64 "
        "points [x, y] normalised 0..1 to the frame; 0..32 polygons.",
    )

    @model_validator(mode="after")
    def _areas_ordered(self) -> MotionConfig:
        if self.recalibrate_area <= self.min_area:
            raise field_error("recalibrate_area", "must be > min_area")
        return self
