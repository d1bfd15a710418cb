"""Pictures of faces (`snapshots:` per camera, `snapshot_dir:` for the node).

Images of people are off by default: `mode: off` publishes metadata only, and nothing that
identifies a person leaves the node unless the operator turns a mode on for a camera.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from edge_facedet.config.base import StrictModel, resolve_path, yaml_off


class SnapshotMode(enum.Enum):
    """What picture a camera's track gets (the best face's frame)."""

    OFF = "off"
    CROP = "crop"
    FRAME = "frame"
    BLURRED_FRAME = "blurred_frame"


class SnapshotConfig(StrictModel):
    """A camera's snapshots: the best face of each track, as a JPEG."""

    mode: SnapshotMode = Field(
        default=SnapshotMode.OFF,
        description="off: metadata only (default); crop: the best face with a margin; "
        "frame: the best face's frame with the boxes drawn; blurred_frame: that frame with "
        "every detected face blurred (the scene without the identities).",
    )
    jpeg_quality: int = Field(default=85, ge=10, le=100, description="JPEG quality (10..100).")
    margin: float = Field(
        default=0.4,
        ge=0.0,
        le=2.0,
        description="crop: space added around the face on each side, as a share of its size.",
    )
    max_size_px: int = Field(
        default=1280,
        ge=32,
        le=8192,
        description="Longest side of the JPEG in pixels; larger pictures are scaled down.",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return yaml_off(value)

    @property
    def enabled(self) -> bool:
        return self.mode is not SnapshotMode.OFF


class SnapshotDirConfig(StrictModel):
    """Where snapshots are also written as files, one per event; bounded in size and age."""

    path: Path = Field(
        description="Directory for snapshot files (relative to the config file); it must "
        "exist and be writable by the service (the unit's StateDirectory works)."
    )
    max_bytes: Annotated[int, Field(ge=1 << 20, le=1 << 40)] = Field(
        default=1 << 30,
        description="Total size kept; the oldest files are deleted first (1 MiB..1 TiB).",
    )
    max_age_s: float = Field(
        default=7 * 86400.0,
        ge=60,
        le=10 * 365 * 86400.0,
        description="Files older than this are deleted (60 s..10 years).",
    )
    min_free_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = Field(
        default=256 << 20,
        description="No file is written while the file system has less free space than this.",
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, value: Path, info: ValidationInfo) -> Path:
        resolved = resolve_path(value, info)
        assert resolved is not None  # noqa: S101 - a Path in gives a Path out
        return resolved
