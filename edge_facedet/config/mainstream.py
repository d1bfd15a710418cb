"""The main stream behind a substream (`main_stream:` per camera, or in `defaults`).

A camera detected on its low-resolution `detect_url` can take its snapshots from its
full-resolution `url`: that stream is demuxed into a bounded buffer of compressed packets and
decoded only when a snapshot needs a picture (sources/mainstream.py, outputs/snapshots/
mainframe.py). It applies only where it can help, so `enabled` is on by default and takes
effect when the camera has both URLs and snapshots on (`main_stream_active`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from edge_facedet.config.base import StrictModel
from edge_facedet.config.errors import field_error
from edge_facedet.config.snapshots import SnapshotMode

if TYPE_CHECKING:
    from edge_facedet.config.camera import CameraConfig

__all__ = ["FieldOfView", "MainStreamConfig", "main_stream_active"]


class FieldOfView(StrictModel):
    """Where the substream's picture lies in the main stream's, normalised to the main one.

    For a substream that is a crop of the main picture (or a main stream letterboxed around
    it); the default, the whole picture, is a substream that shows the same view scaled.
    """

    x: float = Field(ge=0.0, le=1.0, description="Left edge in the main picture, 0..1.")
    y: float = Field(ge=0.0, le=1.0, description="Top edge in the main picture, 0..1.")
    w: float = Field(ge=0.0, le=1.0, description="Width as a share of the main picture, 0..1.")
    h: float = Field(ge=0.0, le=1.0, description="Height as a share of the main picture, 0..1.")

    @model_validator(mode="after")
    def _inside(self) -> FieldOfView:
        if not (self.w > 0 and self.h > 0):
            raise field_error("w" if self.w <= 0 else "h", "w and h must be above 0")
        # A little slack for values written with a few decimals (0.333 + 0.667).
        if self.x + self.w > 1.0 + 1e-6:
            raise field_error("w", "x + w must be at most 1 (inside the main picture)")
        if self.y + self.h > 1.0 + 1e-6:
            raise field_error("h", "y + h must be at most 1 (inside the main picture)")
        return self


class MainStreamConfig(StrictModel):
    """Snapshots from the main stream (`url`) of a camera detected on `detect_url`."""

    enabled: bool = Field(
        default=True,
        description="Take snapshots from `url` when the camera also has `detect_url` and "
        "snapshots on (crop or frame); false: from the detected stream.",
    )
    max_bytes: Annotated[int, Field(ge=256 << 10, le=256 << 20)] = Field(
        default=8 << 20,
        description="Compressed packets kept per camera, in bytes (256 KiB..256 MiB); whole "
        "GOPs are dropped from the front beyond it.",
    )
    max_seconds: float = Field(
        default=6.0,
        ge=1.0,
        le=60.0,
        description="Seconds of packets kept per camera (1..60); at least one keyframe "
        "interval plus the snapshot queue's wait, or snapshots fall back to the substream.",
    )
    max_wait_s: float = Field(
        default=1.0,
        ge=0.0,
        le=10.0,
        description="How long a snapshot waits for the main stream to reach the face's "
        "moment (0..10 s); a main stream further behind falls back to the substream.",
    )
    view_check_s: float = Field(
        default=10.0,
        ge=1.0,
        le=300.0,
        description="Seconds of main-stream pictures that fail to match the substream's "
        "before a connection's views are called different (1..300): longer than the "
        "camera's start-up, when a stream joined mid-GOP decodes damaged pictures.",
    )
    map: FieldOfView | None = Field(
        default=None,
        description="The substream's view inside the main picture, normalised {x, y, w, h}; "
        "default: the same view (checked once per connection, with a warning if not).",
    )


def main_stream_active(camera: CameraConfig) -> bool:
    """True when `camera`'s snapshots come from its main stream: on, both URLs, and a
    snapshot mode that shows the face itself (a misaligned blur would reveal a face, so
    blurred_frame keeps the detected stream's picture, whose boxes are the detector's own)."""
    return (
        camera.main_stream.enabled
        and camera.detect_url is not None
        and camera.detect_url != camera.url
        and camera.snapshots.mode in {SnapshotMode.CROP, SnapshotMode.FRAME}
    )
