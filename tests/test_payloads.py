"""The MQTT message bodies against their JSON Schemas, and the publish policies."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_facedet.config import PublishConfig, PublishPolicy
from edge_facedet.frames import Detections
from edge_facedet.outputs.payloads import (
    PublishGate,
    camera_state_payload,
    faces_payload,
    load_schema,
    new_run_id,
)

T0 = datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=timezone.utc)
FACES = jsonschema.Draft202012Validator(load_schema("faces"))
STATE = jsonschema.Draft202012Validator(load_schema("camera_state"))


def detections(boxes_px: Any, width: int, height: int, confidences: Any) -> Detections:
    boxes = np.asarray(boxes_px, np.float32).reshape(-1, 4)
    scale = np.array([width, height, width, height], np.float32)
    return Detections(
        boxes_px=boxes,
        boxes_norm=(boxes / scale).astype(np.float32),
        confidences=np.asarray(confidences, np.float32).reshape(-1),
    )


def build(det: Detections, *, width: int = 640, height: int = 480, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "node_id": "node-1",
        "run_id": "r1",
        "camera_id": "cam-1",
        "seq": 7,
        "capture_time": T0,
        "latency_ms": 12.345,
        "frame_width": width,
        "frame_height": height,
        "model": "face-detection-0204",
        "device": "CPU",
        "detections": det,
    }
    args.update(kw)
    raw = faces_payload(**args)
    assert isinstance(raw, bytes)
    body: dict[str, Any] = json.loads(raw)
    FACES.validate(body)
    return body


def test_schemas_are_valid_draft_2020_12() -> None:
    for name in ("faces", "camera_state", "event"):
        schema = load_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False


def test_faces_payload_zero_faces() -> None:
    body = build(Detections.empty())
    assert body["faces"] == []
    assert body["event_id"] == "node-1-cam-1-r1-7"
    assert body["capture_ts"] == "2026-11-25T16:00:00.123Z"
    assert body["latency_ms"] == 12.3
    assert body["frame"] == {"width": 640, "height": 480}


def test_faces_payload_rounding_and_compact_json() -> None:
    det = detections([[10.04, 20.06, 110.55, 220.0]], 640, 480, [0.98765])
    raw = faces_payload(
        node_id="n",
        run_id="r",
        camera_id="c",
        seq=0,
        capture_time=T0,
        latency_ms=1.0,
        frame_width=640,
        frame_height=480,
        model="m",
        device="CPU",
        detections=det,
    )
    assert b" " not in raw  # compact separators
    face = json.loads(raw)["faces"][0]
    assert face["box"] == [10.0, 20.1, 110.6, 220.0]
    assert face["confidence"] == 0.988
    assert face["box_norm"] == [0.0157, 0.0418, 0.1727, 0.4583]
    # float32 artefacts such as 0.10000000149011612 must not leak into the JSON.
    assert all(len(repr(v).split(".")[1]) <= 4 for v in face["box_norm"])


def test_faces_payload_200_faces_and_edges() -> None:
    n = 200
    boxes = np.tile(np.array([[0, 0, 640, 480]], np.float32), (n, 1))
    boxes[1::2] = [600.0, 440.0, 640.0, 480.0]
    body = build(detections(boxes, 640, 480, np.linspace(1.0, 0.0, n)))
    assert len(body["faces"]) == n
    assert body["faces"][0]["box"] == [0.0, 0.0, 640.0, 480.0]
    assert body["faces"][0]["box_norm"] == [0.0, 0.0, 1.0, 1.0]
    assert body["faces"][-1]["confidence"] == 0.0


def test_faces_payload_sanitises_nan_inf_and_out_of_frame() -> None:
    boxes = [[np.nan, -5.0, np.inf, 9999.0]]
    det = Detections(
        boxes_px=np.asarray(boxes, np.float32),
        boxes_norm=np.asarray([[np.nan, -0.1, np.inf, 2.0]], np.float32),
        confidences=np.asarray([np.nan], np.float32),
    )
    body = build(det, latency_ms=float("nan"))
    face = body["faces"][0]
    assert face["box"] == [0.0, 0.0, 0.0, 480.0]
    assert face["box_norm"] == [0.0, 0.0, 0.0, 1.0]
    assert face["confidence"] == 0.0
    assert body["latency_ms"] == 0.0


def test_faces_payload_track_ids_in_detection_order() -> None:
    det = detections([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], 640, 480, [0.9, 0.8, 0.7])
    body = build(det, track_ids=["n-c-r-t1", None, "n-c-r-t7"])
    assert [f["track"] for f in body["faces"]] == ["n-c-r-t1", None, "n-c-r-t7"]
    assert [f["box"][0] for f in body["faces"]] == [1.0, 5.0, 9.0]  # paired in order


def test_faces_payload_without_track_ids_has_every_track_null() -> None:
    body = build(detections([[1, 2, 3, 4], [5, 6, 7, 8]], 640, 480, [0.9, 0.8]))
    assert [f["track"] for f in body["faces"]] == [None, None]


def test_faces_payload_refuses_track_ids_of_another_length() -> None:
    det = detections([[1, 2, 3, 4], [5, 6, 7, 8]], 640, 480, [0.9, 0.8])
    with pytest.raises(ValueError, match="1 track ids for 2 detections"):
        build(det, track_ids=["t1"])


def test_faces_schema_requires_a_track_key_and_rejects_an_empty_id() -> None:
    good = build(detections([[1, 2, 3, 4]], 640, 480, [0.5]), track_ids=["t1"])
    missing = json.loads(json.dumps(good))
    del missing["faces"][0]["track"]
    assert not FACES.is_valid(missing)
    empty = json.loads(json.dumps(good))
    empty["faces"][0]["track"] = ""
    assert not FACES.is_valid(empty)


def test_faces_payload_timestamps() -> None:
    plus2 = timezone(timedelta(hours=2))
    body = build(Detections.empty(), capture_time=T0.astimezone(plus2))
    assert body["capture_ts"] == "2026-11-25T16:00:00.123Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        build(Detections.empty(), capture_time=datetime(2026, 1, 1))  # noqa: DTZ001


def test_event_ids_differ_across_runs() -> None:
    runs = {new_run_id() for _ in range(1000)}
    assert len(runs) == 1000
    a = build(Detections.empty(), run_id=new_run_id())
    b = build(Detections.empty(), run_id=new_run_id())
    assert a["event_id"] != b["event_id"]


def test_schema_rejects_bad_messages() -> None:
    good = build(detections([[1, 2, 3, 4]], 640, 480, [0.5]))
    for mutate in (
        lambda b: b.update(extra=1),
        lambda b: b["faces"][0].update(confidence=1.5),
        lambda b: b["faces"][0].update(box_norm=[0, 0, 1]),
        lambda b: b.update(capture_ts="2026-11-25 16:00:00"),
        lambda b: b.update(seq=-1),
        lambda b: b["frame"].update(width=0),
    ):
        body = json.loads(json.dumps(good))
        mutate(body)
        assert not FACES.is_valid(body), body


def test_camera_state_payload() -> None:
    raw = camera_state_payload(
        camera_id="cam-1",
        state="streaming",
        fps_in=25.0,
        fps_out=4.987,
        last_error="open rtsp://admin:hunter2@10.0.0.5/stream failed",
        reconnects=3,
        frame_width=1920,
        frame_height=1080,
        now=T0,
    )
    body = json.loads(raw)
    STATE.validate(body)
    assert b"hunter2" not in raw
    assert body["fps_out"] == 4.99
    assert body["frame"] == {"width": 1920, "height": 1080}
    assert body["ts"] == "2026-11-25T16:00:00.123Z"

    raw = camera_state_payload(
        camera_id="cam-1",
        state="connecting",
        fps_in=float("inf"),
        fps_out=0.0,
        last_error=None,
        reconnects=0,
        frame_width=None,
        frame_height=None,
        now=T0,
    )
    body = json.loads(raw)
    STATE.validate(body)
    assert body["frame"] is None
    assert body["last_error"] is None
    assert body["fps_in"] == 0.0
    body["extra"] = 1
    assert not STATE.is_valid(body)


def state(**overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "camera_id": "cam-1",
        "state": "streaming",
        "fps_in": 25.0,
        "fps_out": 5.0,
        "last_error": None,
        "reconnects": 0,
        "frame_width": 640,
        "frame_height": 480,
        "now": T0,
    }
    args.update(overrides)
    return camera_state_payload(**args)


def test_camera_state_open_tracks() -> None:
    body = json.loads(state(open_tracks=3))
    STATE.validate(body)
    assert body["open_tracks"] == 3
    assert json.loads(state())["open_tracks"] == 0  # the default: no tracker, no tracks
    with pytest.raises(ValueError, match="open_tracks must be >= 0"):
        state(open_tracks=-1)
    del body["open_tracks"]
    assert not STATE.is_valid(body)  # required: Home Assistant's face_present reads it


def gate(policy: PublishPolicy, heartbeat_s: float = 10.0) -> PublishGate:
    return PublishGate(config=PublishConfig(policy=policy, heartbeat_s=heartbeat_s))


def test_gate_every_frame() -> None:
    g = gate(PublishPolicy.EVERY_FRAME)
    assert all(g.should_publish(face_count=n, now_monotonic=t) for t, n in enumerate([0, 0, 1]))


def test_gate_on_faces() -> None:
    g = gate(PublishPolicy.ON_FACES)
    counts = [0, 1, 1, 0, 3, 0]
    got = [g.should_publish(face_count=n, now_monotonic=float(t)) for t, n in enumerate(counts)]
    assert got == [False, True, True, False, True, False]


def test_gate_off_publishes_nothing() -> None:
    g = gate(PublishPolicy.OFF, heartbeat_s=1.0)
    # Face counts changing, and heartbeats long overdue: still nothing.
    got = [
        g.should_publish(face_count=n, now_monotonic=t * 5.0) for t, n in enumerate([0, 1, 3, 0])
    ]
    assert got == [False, False, False, False]


def test_gate_on_change_with_heartbeat() -> None:
    g = gate(PublishPolicy.ON_CHANGE, heartbeat_s=10.0)
    steps = [
        (0.0, 0, True),  # first frame always
        (1.0, 0, False),
        (2.0, 2, True),  # count changed
        (3.0, 2, False),
        (9.0, 2, False),
        (12.0, 2, True),  # heartbeat: 10 s since the publish at t=2
        (13.0, 2, False),
        (14.0, 0, True),
        (23.9, 0, False),
        (24.0, 0, True),
    ]
    for t, n, expected in steps:
        assert g.should_publish(face_count=n, now_monotonic=t) is expected, (t, n)


def test_gate_on_change_compares_with_last_published_count() -> None:
    g = gate(PublishPolicy.ON_CHANGE)
    assert g.should_publish(face_count=1, now_monotonic=0.0)
    assert not g.should_publish(face_count=1, now_monotonic=1.0)
    assert g.should_publish(face_count=2, now_monotonic=2.0)
    assert g.should_publish(face_count=1, now_monotonic=3.0)


# Unclipped values, as a broken model, device or post-processor could hand over: NaN, +-inf,
# huge, negative and in-range numbers mixed, so the payload's own sanitising is what is fuzzed.
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0])
ANY_FLOAT32 = st.floats(width=32)  # NaN and +-inf included
values = st.one_of(
    SPECIAL, ANY_FLOAT32, st.floats(-2.0, 2.0, width=32), st.floats(-10, 9000, width=32)
)


@st.composite
def random_detections(draw: st.DrawFn) -> tuple[Detections, int, int]:
    width = draw(st.integers(1, 8192))
    height = draw(st.integers(1, 8192))
    n = draw(st.integers(0, 200))
    return (
        Detections(
            boxes_px=draw(hnp.arrays(np.float32, (n, 4), elements=values)),
            boxes_norm=draw(hnp.arrays(np.float32, (n, 4), elements=values)),
            confidences=draw(hnp.arrays(np.float32, (n,), elements=values)),
        ),
        width,
        height,
    )


def sanitised(value: float, upper: float, digits: int) -> float:
    """The documented rule, value by value: non-finite -> 0, clipped to [0, upper], rounded."""
    if not math.isfinite(value):
        return 0.0
    return round(min(max(float(value), 0.0), upper), digits)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=random_detections(),
    latency=st.floats(allow_nan=True, allow_infinity=True),
    seq=st.integers(0, 2**53),
)
def test_fuzz_faces_payload_is_schema_valid(
    case: tuple[Detections, int, int], latency: float, seq: int
) -> None:
    det, width, height = case
    body = build(det, width=width, height=height, latency_ms=latency, seq=seq)
    assert len(body["faces"]) == len(det)
    assert math.isfinite(body["latency_ms"]) and body["latency_ms"] >= 0
    uppers = (width, height, width, height)
    for index, face in enumerate(body["faces"]):
        numbers = [*face["box"], *face["box_norm"], face["confidence"]]
        assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), face
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 <= width and 0 <= x1 <= width
        assert 0 <= y0 <= height and 0 <= y1 <= height
        assert all(0 <= v <= 1 for v in face["box_norm"])
        assert 0 <= face["confidence"] <= 1
        # And the values are the inputs, sanitised by the rule, not merely some valid numbers
        # (within one unit of the last kept decimal: the code rounds in binary).
        inputs = [*det.boxes_px[index], *det.boxes_norm[index], det.confidences[index]]
        limits = [*uppers, 1, 1, 1, 1, 1]
        digits = [1, 1, 1, 1, 4, 4, 4, 4, 3]
        for got, value, upper, kept in zip(numbers, inputs, limits, digits, strict=True):
            assert abs(got - sanitised(float(value), upper, kept)) <= 1.01 * 10**-kept, face
