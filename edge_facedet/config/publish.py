"""When a camera's faces messages are published (`publish:`, per camera or in `defaults`)."""

from __future__ import annotations

import enum

from pydantic import Field, field_validator

from edge_facedet.config.base import MIN_TIMEOUT_S, StrictModel, yaml_off


class PublishPolicy(enum.Enum):
    """Which of a camera's processed frames produce a faces message."""

    EVERY_FRAME = "every_frame"
    ON_FACES = "on_faces"
    ON_CHANGE = "on_change"
    OFF = "off"


class PublishConfig(StrictModel):
    """When a camera's faces messages are published."""

    policy: PublishPolicy = Field(
        default=PublishPolicy.ON_CHANGE,
        description="every_frame: every processed frame; on_faces: frames with faces; "
        "on_change: when the face count changes, plus a heartbeat; off: none (events only).",
    )
    heartbeat_s: float = Field(
        default=10.0,
        ge=MIN_TIMEOUT_S,
        le=3600,
        description="on_change: publish at least this often (0.1..3600 s).",
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return yaml_off(value)
