"""What a subscriber is told about a face over time: a track's `new`, `update` and `end`.

These are values only; `lifecycle` decides when they happen and `outputs.events` turns them
into the `<prefix>/cameras/<id>/events` message (event.schema.json).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["Box", "EndReason", "EventType", "Sighting", "TrackEvent"]

Box = tuple[float, float, float, float]
"""x_min, y_min, x_max, y_max."""


class EventType(enum.Enum):
    NEW = "new"
    """The track was confirmed (`tracking.min_hits` detections)."""
    UPDATE = "update"
    """The best face improved, or `max_update_interval_s` passed."""
    END = "end"
    """The track ended; `end_reason` says why. Nothing follows for this `event_id`."""


class EndReason(enum.Enum):
    LOST = "lost"
    """No detection for `tracking.max_age_s`."""
    CAMERA_DOWN = "camera_down"
    """The camera stopped streaming (reconnecting, failed or at the end of its file)."""
    SHUTDOWN = "shutdown"
    """The service stopped."""
    RELOAD = "reload"
    """A configuration reload removed or changed the camera (a changed camera restarts)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """One detection of a track's face, in the frame it was seen in."""

    time: datetime
    """The frame's capture time (UTC, timezone-aware)."""
    box_px: Box
    """In pixels of the frame as the camera delivered it."""
    box_norm: Box
    """The same box normalised to [0, 1]."""
    confidence: float
    quality: float
    """tracking.quality's score in [0, 1]: what the best face is chosen by."""
    height_px: float
    """The face's height in pixels of the frame as the camera delivered it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackEvent:
    """One event of one track."""

    type: EventType
    event_id: str
    """The track id: unique across cameras, nodes and restarts."""
    camera_id: str
    start_time: datetime
    """Capture time of the track's first detection."""
    last_time: datetime
    """Capture time of the track's latest detection."""
    end_time: datetime | None
    """`end` only: when the track was ended (for `lost`, its last detection + max_age_s)."""
    frames_seen: int
    """Processed frames with a detection of this face."""
    frame_width: int
    frame_height: int
    current: Sighting
    """The latest detection."""
    best: Sighting
    """The best detection so far (highest quality)."""
    snapshot: bool
    """Whether a snapshot of `best` goes to the snapshot topic for this event."""
    snapshot_source: str | None
    """Which stream the snapshot is cut from: "detect" (the detected stream); None without."""
    end_reason: EndReason | None
    """`end` only."""
