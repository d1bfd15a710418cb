"""The `<prefix>/cameras/<id>/events` message: one face track's `new`, `update` or `end`.

The wire format of a `tracking.events.TrackEvent` (schema: event.schema.json), built with
payloads.py's rules and helpers, so a subscriber reads boxes, confidences and times in an
event exactly as in a faces message: non-finite values become 0, boxes are clipped to the
frame, normalised values and scores to [0, 1], times are UTC with milliseconds, and
`allow_nan=False` is the backstop. No I/O.

An event whose fields contradict each other (an `end` without its reason, a snapshot without
its source) is a bug in whoever built it and raises ValueError, rather than going out as a
message the schema's rules would reject.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_facedet.outputs.payloads import (
    _clipped,
    _finite_non_negative,
    _to_json,
    _utc_iso_ms,
)
from edge_facedet.tracking.events import EventType

if TYPE_CHECKING:
    from edge_facedet.tracking.events import Box, Sighting, TrackEvent

__all__ = ["SNAPSHOT_SOURCES", "event_payload"]

SNAPSHOT_SOURCES = frozenset({"detect", "main"})
"""`snapshot_source` values: the detected stream, or the camera's main `url`."""

# Decimals kept, as in the faces message: pixels 1, normalised 4, scores 3.
_PX_DIGITS = 1
_NORM_DIGITS = 4
_SCORE_DIGITS = 3
_SECONDS_DIGITS = 3


def _box_px(box: Box, *, width: int, height: int) -> list[float]:
    uppers = (width, height, width, height)
    return [_clipped(v, upper=u, digits=_PX_DIGITS) for v, u in zip(box, uppers, strict=True)]


def _box_norm(box: Box) -> list[float]:
    return [_clipped(v, upper=1.0, digits=_NORM_DIGITS) for v in box]


def _score(value: float) -> float:
    return _clipped(value, upper=1.0, digits=_SCORE_DIGITS)


def _best(best: Sighting, *, width: int, height: int) -> dict[str, Any]:
    return {
        "box": _box_px(best.box_px, width=width, height=height),
        "box_norm": _box_norm(best.box_norm),
        "confidence": _score(best.confidence),
        "quality": _score(best.quality),
        "height_px": _clipped(best.height_px, upper=height, digits=_PX_DIGITS),
        "ts": _utc_iso_ms(best.time),
    }


def _check(event: TrackEvent) -> None:
    """The rules between fields that the schema also states; ValueError naming the field."""
    if event.frame_width < 1 or event.frame_height < 1:
        raise ValueError(
            f"frame size must be positive, got {event.frame_width}x{event.frame_height}"
        )
    if event.frames_seen < 1:
        raise ValueError(f"frames_seen must be >= 1, got {event.frames_seen}")
    is_end = event.type is EventType.END
    kind = event.type.value
    if is_end != (event.end_reason is not None):
        raise ValueError(f"end_reason is set exactly for end events ({kind}: {event.end_reason})")
    if is_end != (event.end_time is not None):
        raise ValueError(f"end_time is set exactly for end events ({kind}: {event.end_time})")
    if event.snapshot and event.snapshot_source not in SNAPSHOT_SOURCES:
        raise ValueError(f"a snapshot needs a source, detect or main: {event.snapshot_source!r}")
    if not event.snapshot and event.snapshot_source is not None:
        raise ValueError(f"snapshot_source {event.snapshot_source!r} without a snapshot")


def event_payload(*, event: TrackEvent) -> bytes:
    """The `<prefix>/cameras/<id>/events` message for `event` (schema: event.schema.json).

    `duration_s` runs from the first detection to the end (or, before it, to the latest
    detection); a clock that stepped backwards makes it 0, never negative.
    """
    _check(event)
    width, height = event.frame_width, event.frame_height
    until = event.end_time if event.end_time is not None else event.last_time
    current = event.current
    body = {
        "type": event.type.value,
        "event_id": event.event_id,
        "camera": event.camera_id,
        "start_ts": _utc_iso_ms(event.start_time),
        "last_ts": _utc_iso_ms(event.last_time),
        "end_ts": None if event.end_time is None else _utc_iso_ms(event.end_time),
        "duration_s": _finite_non_negative(
            (until - event.start_time).total_seconds(), digits=_SECONDS_DIGITS
        ),
        "frames_seen": event.frames_seen,
        "frame": {"width": width, "height": height},
        "box": _box_px(current.box_px, width=width, height=height),
        "box_norm": _box_norm(current.box_norm),
        "confidence": _score(current.confidence),
        "best": _best(event.best, width=width, height=height),
        "snapshot": event.snapshot,
        "snapshot_source": event.snapshot_source,
        "end_reason": None if event.end_reason is None else event.end_reason.value,
    }
    return _to_json(body)
