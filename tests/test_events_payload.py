"""The events message (outputs/events.py) against event.schema.json, fuzzed with broken values."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_facedet.outputs.events import event_payload
from edge_facedet.outputs.payloads import load_schema
from edge_facedet.tracking.events import EndReason, EventType, Sighting, TrackEvent

T0 = datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=timezone.utc)
SCHEMA = load_schema("event")
EVENT = jsonschema.Draft202012Validator(SCHEMA)


def sighting(**overrides: Any) -> Sighting:
    fields: dict[str, Any] = {
        "time": T0,
        "box_px": (100.04, 50.06, 160.55, 130.0),
        "box_norm": (0.15631, 0.10429, 0.25086, 0.27083),
        "confidence": 0.98765,
        "quality": 0.71234,
        "height_px": 80.04,
    }
    fields.update(overrides)
    return Sighting(**fields)


def track_event(**overrides: Any) -> TrackEvent:
    fields: dict[str, Any] = {
        "type": EventType.NEW,
        "event_id": "gate-1-door-0b942f224cf8-t17",
        "camera_id": "door",
        "start_time": T0,
        "last_time": T0 + timedelta(seconds=1.5),
        "end_time": None,
        "frames_seen": 8,
        "frame_width": 640,
        "frame_height": 480,
        "current": sighting(time=T0 + timedelta(seconds=1.5)),
        "best": sighting(time=T0 + timedelta(seconds=0.4)),
        "snapshot": False,
        "snapshot_source": None,
        "end_reason": None,
    }
    fields.update(overrides)
    return TrackEvent(**fields)


def ended(**overrides: Any) -> TrackEvent:
    fields: dict[str, Any] = {
        "type": EventType.END,
        "end_time": T0 + timedelta(seconds=3.5),
        "end_reason": EndReason.LOST,
    }
    fields.update(overrides)
    return track_event(**fields)


def build(event: TrackEvent) -> dict[str, Any]:
    raw = event_payload(event=event)
    assert isinstance(raw, bytes)
    body: dict[str, Any] = json.loads(raw)
    EVENT.validate(body)
    return body


def test_schema_is_valid_draft_2020_12_and_strict() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["properties"]["best"]["additionalProperties"] is False
    assert set(SCHEMA["required"]) == set(SCHEMA["properties"])


def test_new_event_every_field() -> None:
    raw = event_payload(event=track_event())
    assert b" " not in raw  # compact, like the faces message
    assert json.loads(raw) == {
        "type": "new",
        "event_id": "gate-1-door-0b942f224cf8-t17",
        "camera": "door",
        "start_ts": "2026-11-25T16:00:00.123Z",
        "last_ts": "2026-11-25T16:00:01.623Z",
        "end_ts": None,
        "duration_s": 1.5,
        "frames_seen": 8,
        "frame": {"width": 640, "height": 480},
        "box": [100.0, 50.1, 160.6, 130.0],
        "box_norm": [0.1563, 0.1043, 0.2509, 0.2708],
        "confidence": 0.988,
        "best": {
            "box": [100.0, 50.1, 160.6, 130.0],
            "box_norm": [0.1563, 0.1043, 0.2509, 0.2708],
            "confidence": 0.988,
            "quality": 0.712,
            "height_px": 80.0,
            "ts": "2026-11-25T16:00:00.523Z",
        },
        "snapshot": False,
        "snapshot_source": None,
        "end_reason": None,
    }
    EVENT.validate(json.loads(raw))


def test_end_event_duration_runs_to_the_end() -> None:
    body = build(ended(end_reason=EndReason.CAMERA_DOWN))
    assert body["type"] == "end"
    assert body["end_ts"] == "2026-11-25T16:00:03.623Z"
    assert body["duration_s"] == 3.5  # end minus start, not last minus start
    assert body["end_reason"] == "camera_down"


def test_update_with_snapshot_from_the_main_stream() -> None:
    body = build(track_event(type=EventType.UPDATE, snapshot=True, snapshot_source="main"))
    assert (body["type"], body["snapshot"], body["snapshot_source"]) == ("update", True, "main")


def test_times_in_another_zone_are_written_as_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    body = build(track_event(start_time=T0.astimezone(plus2)))
    assert body["start_ts"] == "2026-11-25T16:00:00.123Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        event_payload(event=track_event(start_time=datetime(2026, 1, 1)))  # noqa: DTZ001


def test_a_clock_stepping_back_gives_duration_zero() -> None:
    body = build(track_event(last_time=T0 - timedelta(seconds=2)))
    assert body["duration_s"] == 0.0


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"type": EventType.END}, "end_reason is set exactly for end"),  # no reason, no time
        ({"type": EventType.END, "end_reason": EndReason.LOST}, "end_time"),
        ({"end_reason": EndReason.SHUTDOWN}, "end_reason is set exactly for end"),
        ({"end_time": T0}, "end_time is set exactly for end"),
        ({"snapshot": True}, "a snapshot needs a source"),
        ({"snapshot": True, "snapshot_source": "side"}, "a snapshot needs a source"),
        ({"snapshot_source": "detect"}, "without a snapshot"),
        ({"frames_seen": 0}, "frames_seen"),
        ({"frame_width": 0}, "frame size"),
    ],
)
def test_contradictory_events_are_refused(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        event_payload(event=track_event(**overrides))


@pytest.mark.parametrize(
    "mutate",
    [
        # The end rule, both ways round.
        lambda b: b.update(end_reason=None),
        lambda b: b.update(end_ts=None),
        lambda b: b.update(type="update"),
        lambda b: b.update(type="new", end_ts=None),  # end_reason still set
        # The snapshot rule.
        lambda b: b.update(snapshot=True),
        # Values and bounds.
        lambda b: b.update(end_reason="crashed"),
        lambda b: b.update(type="start"),
        lambda b: b.update(snapshot_source="side", snapshot=True),
        lambda b: b.update(extra=1),
        lambda b: b["best"].update(extra=1),
        lambda b: b["best"].update(quality=1.5),
        lambda b: b["best"].update(ts="2026-11-25 16:00:00"),
        lambda b: b.update(confidence=-0.1),
        lambda b: b.update(box_norm=[0, 0, 1]),
        lambda b: b.update(duration_s=-1),
        lambda b: b.update(frames_seen=0),
        lambda b: b.update(end_ts="yesterday"),
        lambda b: b.pop("end_reason"),
    ],
)
def test_schema_rejects_bad_end_messages(mutate: Any) -> None:
    good = build(ended())
    body = json.loads(json.dumps(good))
    mutate(body)
    assert not EVENT.is_valid(body), body


def test_schema_end_rule_rejects_a_new_event_with_an_end() -> None:
    good = build(track_event())
    for changes in ({"end_reason": "lost"}, {"end_ts": good["start_ts"]}, {"type": "end"}):
        body = {**good, **changes}
        assert not EVENT.is_valid(body), changes


# Unclipped values, as a broken model, tracker or quality score could hand over.
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, 1e308, -1e308])
values = st.one_of(SPECIAL, st.floats(), st.floats(-2.0, 2.0), st.floats(-10, 9000))
boxes = st.tuples(values, values, values, values)
aware_times = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7, minutes=-30))]),
)


@st.composite
def sightings(draw: st.DrawFn) -> Sighting:
    return Sighting(
        time=draw(aware_times),
        box_px=draw(boxes),
        box_norm=draw(boxes),
        confidence=draw(values),
        quality=draw(values),
        height_px=draw(values),
    )


@st.composite
def random_events(draw: st.DrawFn) -> TrackEvent:
    kind = draw(st.sampled_from(EventType))
    end = kind is EventType.END
    snapshot = draw(st.booleans())
    return TrackEvent(
        type=kind,
        event_id=draw(st.text(min_size=1, max_size=80)),
        camera_id=draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")),
        start_time=draw(aware_times),
        last_time=draw(aware_times),
        end_time=draw(aware_times) if end else None,
        frames_seen=draw(st.integers(1, 2**40)),
        frame_width=draw(st.integers(1, 8192)),
        frame_height=draw(st.integers(1, 8192)),
        current=draw(sightings()),
        best=draw(sightings()),
        snapshot=snapshot,
        snapshot_source=draw(st.sampled_from(["detect", "main"])) if snapshot else None,
        end_reason=draw(st.sampled_from(EndReason)) if end else None,
    )


def sanitised(value: float, upper: float, digits: int) -> float:
    """The documented rule: non-finite -> 0, clipped to [0, upper], rounded."""
    if not math.isfinite(value):
        return 0.0
    return round(min(max(value, 0.0), upper), digits)


def assert_sanitised(got: list[float], inputs: tuple[float, ...], uppers: Any, digits: int) -> None:
    for value, original, upper in zip(got, inputs, uppers, strict=True):
        assert isinstance(value, float) and math.isfinite(value)
        assert value == sanitised(original, upper, digits), (got, inputs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=random_events())
def test_fuzz_event_payload_is_schema_valid_and_sanitised(event: TrackEvent) -> None:
    body = build(event)  # validates; json.loads would also fail on NaN written by hand
    width, height = event.frame_width, event.frame_height
    for shown, seen in ((body, event.current), (body["best"], event.best)):
        assert_sanitised(shown["box"], seen.box_px, (width, height, width, height), 1)
        assert_sanitised(shown["box_norm"], seen.box_norm, (1, 1, 1, 1), 4)
        assert_sanitised([shown["confidence"]], (seen.confidence,), (1,), 3)
    assert_sanitised([body["best"]["quality"]], (event.best.quality,), (1,), 3)
    assert_sanitised([body["best"]["height_px"]], (event.best.height_px,), (height,), 1)
    until = event.end_time or event.last_time
    expected = max(0.0, (until - event.start_time).total_seconds())
    assert abs(body["duration_s"] - expected) <= 0.0005 + 1e-9
    assert (body["end_reason"] is None) == (event.type is not EventType.END)
    assert (body["end_ts"] is None) == (event.type is not EventType.END)


@settings(max_examples=100, deadline=None)
@given(event=random_events())
def test_fuzz_a_built_event_rebuilt_with_its_end_flipped_is_rejected(event: TrackEvent) -> None:
    # The schema's if/then rule on its own, on messages that are otherwise valid.
    body = build(event)
    flipped = {**body, "type": "update" if event.type is EventType.END else "end"}
    assert not EVENT.is_valid(flipped)
    snapshot_flipped = {**body, "snapshot": not body["snapshot"]}
    assert not EVENT.is_valid(snapshot_flipped)


def test_dataclass_fields_are_all_on_the_wire() -> None:
    # A field added to TrackEvent without a place in the message would be silently dropped.
    on_wire = {
        "type": "type",
        "event_id": "event_id",
        "camera_id": "camera",
        "start_time": "start_ts",
        "last_time": "last_ts",
        "end_time": "end_ts",
        "frames_seen": "frames_seen",
        "frame_width": "frame",
        "frame_height": "frame",
        "current": "box",
        "best": "best",
        "snapshot": "snapshot",
        "snapshot_source": "snapshot_source",
        "end_reason": "end_reason",
    }
    assert {f.name for f in dataclasses.fields(TrackEvent)} == set(on_wire)
    assert set(on_wire.values()) <= set(build(track_event()))
