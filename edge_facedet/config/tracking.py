"""How a camera's faces become tracks and events (`tracking:`, per camera or in `defaults`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from edge_facedet.config.base import MIN_TIMEOUT_S, StrictModel
from edge_facedet.config.errors import field_error


class TrackingConfig(StrictModel):
    """Face tracks and their events (`<prefix>/cameras/<id>/events`).

    A track is confirmed after `min_hits` detections and only then makes a `new` event, so
    a one-frame false positive never does; it ends `max_age_s` after its last detection.
    The thresholds are ByteTrack's: detections at or above the camera's
    `confidence_threshold` start and extend tracks, those between `low_confidence` and it
    only extend tracks that already exist (a face turning away keeps its track).
    """

    enabled: bool = Field(default=True, description="Track faces and publish events.")
    min_hits: int = Field(
        default=2, ge=1, le=100, description="Detections before a track is confirmed (1..100)."
    )
    max_age_s: float = Field(
        default=2.0,
        ge=MIN_TIMEOUT_S,
        le=3600,
        description="A track ends this long after its last detection, but never within 6 "
        "detect periods of it (0.1..3600 s).",
    )
    low_confidence: float = Field(
        default=0.3,
        ge=0.05,
        le=1.0,
        description="Detections from this confidence up extend existing tracks (ByteTrack's "
        "second stage); only those at or above confidence_threshold start one.",
    )
    match_iou: float = Field(
        default=0.2,
        ge=0.01,
        le=0.99,
        description="Least overlap (IoU) between a track's predicted box and a detection.",
    )
    update_interval_s: float = Field(
        default=3.0,
        ge=0.0,
        le=3600,
        description="An `update` event when the best face improved, at most this often.",
    )
    max_update_interval_s: float = Field(
        default=60.0,
        ge=MIN_TIMEOUT_S,
        le=86400,
        description="An `update` event at least this often while a track is open.",
    )
    improvement: float = Field(
        default=0.1,
        ge=0.0,
        le=10.0,
        description="How much better (relative quality) a best face must be to send an update.",
    )

    @model_validator(mode="after")
    def _intervals(self) -> TrackingConfig:
        if self.max_update_interval_s < self.update_interval_s:
            raise field_error("max_update_interval_s", "must be >= update_interval_s")
        return self
