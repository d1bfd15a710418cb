"""The MQTT message bodies (faces, camera state), their JSON Schemas, and when to publish.

Owns the wire format: everything a subscriber parses is built here (and in events.py, which
shares these helpers), from numpy arrays, with no I/O. Builders never emit NaN or infinity
(values are sanitised and `allow_nan=False` is the backstop) and never include a credential
(`last_error` is redacted). `PublishGate` decides, per camera, which frames become a faces
message (`PublishConfig.policy`).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_facedet.config import PublishConfig, PublishPolicy
from edge_facedet.redact import redact_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edge_facedet.frames import Detections

__all__ = [
    "PublishGate",
    "camera_state_payload",
    "faces_payload",
    "load_schema",
    "new_run_id",
]

# A camera error can be a whole FFmpeg message; subscribers get the gist, the log has the rest.
_MAX_ERROR_CHARS = 500
_SEPARATORS = (",", ":")


def new_run_id() -> str:
    """An id for this process run: start time (hex seconds) plus 32 random bits.

    Part of every `event_id`, so ids stay unique across restarts even though `seq` starts
    again at 0: two runs would need the same second *and* the same random draw to collide.
    """
    return f"{int(time.time()):x}{secrets.token_hex(4)}"


def _utc_iso_ms(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive time is ambiguous on a box whose local zone may change; refuse it.
        raise ValueError("timestamps must be timezone-aware")
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _finite_non_negative(value: float, *, digits: int) -> float:
    # Clocks stepping backwards can make a latency negative; a broken counter can make it NaN.
    # Neither may break the message, so both become 0.
    if not math.isfinite(value) or value < 0:
        return 0.0
    return round(float(value), digits)


def _clipped(value: float, *, upper: float, digits: int) -> float:
    """One value by the faces rule: non-finite -> 0, clipped to [0, upper], rounded."""
    if not math.isfinite(value):
        return 0.0
    return round(min(max(float(value), 0.0), upper), digits) + 0.0


_ENCODER = json.JSONEncoder(separators=_SEPARATORS, allow_nan=False)
"""One encoder for every message: `json.dumps` with options builds a new one per call."""


def _to_json(body: dict[str, Any]) -> bytes:
    """Compact JSON; `allow_nan=False` turns a missed NaN into an error, not a bad message."""
    return _ENCODER.encode(body).encode()


_FACE_SCALE = 10.0 ** np.array([1, 1, 1, 1, 4, 4, 4, 4, 3])
"""10 ** decimals kept per face column: box in pixels, box normalised, confidence."""


def _face_columns(detections: Detections, *, frame_width: int, frame_height: int) -> list[Any]:
    """Per face `[box px x4, box_norm x4, confidence]` as Python floats, sanitised, rounded.

    Non-finite values become 0; boxes are clipped to the frame, normalised boxes and
    confidences to [0, 1]. One array and one numpy->list conversion per message (three
    `nan_to_num`/`clip`/`round` passes showed in profiles). float64 before rounding:
    float32 0.1 would otherwise print as 0.10000000149011612; `+ 0.0` turns -0.0 into 0.0.
    """
    count = len(detections)
    if not count:
        return []
    values = np.empty((count, 9), dtype=np.float64)
    values[:, 0:4] = detections.boxes_px.reshape(count, 4)
    values[:, 4:8] = detections.boxes_norm.reshape(count, 4)
    values[:, 8] = detections.confidences.reshape(count)
    values[~np.isfinite(values)] = 0.0
    upper = np.array(
        [frame_width, frame_height, frame_width, frame_height, 1, 1, 1, 1, 1], dtype=np.float64
    )
    # np.clip's Python wrapper costs more than these two calls (no NaN is left to differ).
    np.minimum(np.maximum(values, 0.0, out=values), upper, out=values)
    values = np.rint(values * _FACE_SCALE) / _FACE_SCALE + 0.0
    columns: list[Any] = values.tolist()
    return columns


def faces_payload(
    *,
    node_id: str,
    run_id: str,
    camera_id: str,
    seq: int,
    capture_time: datetime,
    latency_ms: float,
    frame_width: int,
    frame_height: int,
    model: str,
    device: str,
    detections: Detections,
    track_ids: Sequence[str | None] | None = None,
) -> bytes:
    """The `<prefix>/cameras/<id>/faces` message for one frame (schema: faces.schema.json).

    Boxes are clipped to the frame and confidences to [0, 1] here as well as in the
    post-processor, so the message is valid whatever the arrays hold. `track_ids` gives each
    detection (same order) its confirmed track's id, or None while it is in none (yet);
    None for the whole argument means no face is in a track.
    """
    if frame_width < 1 or frame_height < 1:
        raise ValueError(f"frame size must be positive, got {frame_width}x{frame_height}")
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq}")
    if track_ids is None:
        track_ids = [None] * len(detections)
    elif len(track_ids) != len(detections):
        raise ValueError(f"{len(track_ids)} track ids for {len(detections)} detections")
    columns = _face_columns(detections, frame_width=frame_width, frame_height=frame_height)
    body = {
        "camera": camera_id,
        "seq": seq,
        "event_id": f"{node_id}-{camera_id}-{run_id}-{seq}",
        "capture_ts": _utc_iso_ms(capture_time),
        "latency_ms": _finite_non_negative(latency_ms, digits=1),
        "frame": {"width": frame_width, "height": frame_height},
        "model": model,
        "device": device,
        "faces": [
            {"box": face[0:4], "box_norm": face[4:8], "confidence": face[8], "track": track}
            for face, track in zip(columns, track_ids, strict=True)
        ],
    }
    return _to_json(body)


def camera_state_payload(
    *,
    camera_id: str,
    state: str,
    fps_in: float,
    fps_out: float,
    last_error: str | None,
    reconnects: int,
    frame_width: int | None,
    frame_height: int | None,
    now: datetime,
    open_tracks: int = 0,
) -> bytes:
    """The retained `<prefix>/cameras/<id>/state` message (schema: camera_state.schema.json).

    `last_error` is redacted (camera errors often echo the stream URL, credentials included)
    and shortened. `open_tracks` is the number of confirmed face tracks open now: retained,
    it is what "someone is there" reads from (Home Assistant's face_present), steadier than
    per-frame face counts.
    """
    if reconnects < 0:
        raise ValueError(f"reconnects must be >= 0, got {reconnects}")
    if open_tracks < 0:
        raise ValueError(f"open_tracks must be >= 0, got {open_tracks}")
    frame: dict[str, int] | None = None
    if frame_width is not None and frame_height is not None:
        frame = {"width": frame_width, "height": frame_height}
    error = None
    if last_error is not None:
        error = redact_text(last_error)[:_MAX_ERROR_CHARS]
    body = {
        "camera": camera_id,
        "state": state,
        "fps_in": _finite_non_negative(fps_in, digits=2),
        "fps_out": _finite_non_negative(fps_out, digits=2),
        "last_error": error,
        "reconnects": reconnects,
        "frame": frame,
        "open_tracks": open_tracks,
        "ts": _utc_iso_ms(now),
    }
    return _to_json(body)


def load_schema(name: str) -> dict[str, Any]:
    """A packaged JSON Schema: "faces", "camera_state" or "event" (".schema.json" optional)."""
    if not name.endswith(".json"):
        name = f"{name}.schema.json"
    if "/" in name or "\\" in name:
        raise ValueError(f"not a schema name: {name!r}")
    # Via the package, not "edge_facedet.schemas": that directory is data, not a package.
    schema_file = resources.files("edge_facedet").joinpath("schemas").joinpath(name)
    text = schema_file.read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


class PublishGate:
    """Decides which of one camera's frames are published, per `PublishConfig`.

    every_frame: all; on_faces: frames with at least one face; on_change: the first frame,
    any frame whose face count differs from the last *published* count, and a heartbeat
    when nothing was published for `heartbeat_s` (so subscribers can tell "still 0 faces"
    from "camera gone"); off: none (a camera whose subscribers want track events only).
    Time is injected (`time.monotonic()` values) to keep it testable.
    """

    def __init__(self, *, config: PublishConfig) -> None:
        self._policy = config.policy
        self._heartbeat_s = config.heartbeat_s
        self._last_count: int | None = None
        self._last_publish: float | None = None

    def should_publish(self, *, face_count: int, now_monotonic: float) -> bool:
        """Whether to publish this frame; a True answer is recorded as a publish."""
        if self._policy is PublishPolicy.OFF:
            return False
        if self._policy is PublishPolicy.EVERY_FRAME:
            publish = True
        elif self._policy is PublishPolicy.ON_FACES:
            publish = face_count > 0
        else:
            publish = (
                self._last_publish is None
                or face_count != self._last_count
                or now_monotonic - self._last_publish >= self._heartbeat_s
            )
        if publish:
            self._last_count = face_count
            self._last_publish = now_monotonic
        return publish
