"""`ResultPipeline` on its own: what reaches the outputs for each publish policy, region of
interest, confidence threshold and minimum face size, and when camera states are re-sent.

Driven as the scheduler and the readers drive it (`handle_batch` with a `BatchResult` as the
detector returns it, `handle_status`), with a real `MemoryOutput` as the output and a clock
the test moves (`ResultPipeline(clock=...)`), so heartbeats and state refreshes are exact.
Each filter case has a face the filter must drop; the unfiltered control shows that face
would otherwise be published, so the filters (not something else) make the difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge_facedet.config import CameraConfig
from edge_facedet.frames import Frame
from edge_facedet.inference.detector import BatchResult
from edge_facedet.outputs.memory import MemoryOutput
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.payloads import load_schema
from edge_facedet.outputs.pipeline import STATE_REFRESH_S, ResultPipeline
from edge_facedet.sources.status import CameraState, CameraStatus

FACES_SCHEMA = jsonschema.Draft202012Validator(load_schema("faces"))
STATE_SCHEMA = jsonschema.Draft202012Validator(load_schema("camera_state"))
WIDTH, HEIGHT = 640, 480
Row = tuple[float, float, float, float, float]  # confidence, x_min, y_min, x_max, y_max (norm)


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    pipeline: ResultPipeline
    output: MemoryOutput
    metrics: Metrics
    clock: Clock
    seq: int = 0

    def detect(self, camera_id: str, *rows: Row, at: float, age_s: float = 0.0) -> None:
        """One frame of `camera_id` with the detector's candidate `rows`, finished at `at`."""
        self.detect_batch([(camera_id, rows)], at=at, age_s=age_s)

    def detect_batch(
        self, frames: list[tuple[str, tuple[Row, ...]]], *, at: float, age_s: float = 0.0
    ) -> None:
        self.clock.now = at
        batch = []
        for camera_id, _ in frames:
            batch.append(
                Frame(
                    camera_id=camera_id,
                    seq=self.seq,
                    capture_time=datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc),
                    capture_monotonic=at - age_s,
                    width=WIDTH,
                    height=HEIGHT,
                    image=np.zeros((448, 448, 3), np.uint8),
                )
            )
            self.seq += 1
        result = BatchResult(
            rows=[np.asarray(rows, np.float32).reshape(-1, 5) for _, rows in frames],
            inference_seconds=0.02,
        )
        self.pipeline.handle_batch(batch, result)

    def published(self, camera_id: str) -> list[dict[str, Any]]:
        bodies = [json.loads(p) for p in self.output.faces(camera_id)]
        for body in bodies:
            FACES_SCHEMA.validate(body)
        return bodies

    def states(self, camera_id: str) -> list[dict[str, Any]]:
        bodies = [json.loads(p) for p in self.output.states(camera_id)]
        for body in bodies:
            STATE_SCHEMA.validate(body)
        return bodies

    def counter(self, name: str, camera_id: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"camera": camera_id})
        return 0.0 if value is None else value


def camera(camera_id: str = "door", **settings: Any) -> CameraConfig:
    return CameraConfig.model_validate({"id": camera_id, "url": "/dev/video0", **settings})


def rig(*cameras: CameraConfig) -> Rig:
    clock = Clock()
    output = MemoryOutput()
    metrics = Metrics()
    pipeline = ResultPipeline(
        node_id="node-1",
        run_id="run-1",
        cameras=cameras,
        outputs=[output],
        metrics=metrics,
        model_name="face-detection-0204",
        device="CPU",
        clock=clock,
    )
    return Rig(pipeline=pipeline, output=output, metrics=metrics, clock=clock)


# -- publish policy through the pipeline ------------------------------------------------------

FACE: Row = (0.9, 0.40, 0.30, 0.50, 0.50)
OTHER_FACE: Row = (0.8, 0.60, 0.30, 0.70, 0.50)
# (time, faces in the frame); the heartbeat is 10 s.
TIMELINE: list[tuple[float, tuple[Row, ...]]] = [
    (0.0, ()),
    (1.0, (FACE,)),
    (2.0, (FACE,)),
    (3.0, ()),
    (5.0, ()),
    (12.9, ()),  # 9.9 s after the last publish: no heartbeat yet
    (13.0, ()),  # 10 s: heartbeat
    (14.0, (FACE, OTHER_FACE)),
]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("every_frame", [(0, 0), (1, 1), (2, 1), (3, 0), (4, 0), (5, 0), (6, 0), (7, 2)]),
        ("on_faces", [(1, 1), (2, 1), (7, 2)]),
        ("on_change", [(0, 0), (1, 1), (3, 0), (6, 0), (7, 2)]),
    ],
)
def test_publish_policy_decides_which_frames_are_sent(
    policy: str, expected: list[tuple[int, int]]
) -> None:
    r = rig(camera(publish={"policy": policy, "heartbeat_s": 10}))
    for at, rows in TIMELINE:
        r.detect("door", *rows, at=at)
    assert [(b["seq"], len(b["faces"])) for b in r.published("door")] == expected
    # Every frame is counted as inferred, published or not.
    assert r.counter("edge_facedet_frames_inferred_total", "door") == len(TIMELINE)
    assert r.counter("edge_facedet_faces_detected_total", "door") == 4


def test_heartbeat_follows_the_injected_clock_not_the_frame_count() -> None:
    r = rig(camera(publish={"policy": "on_change", "heartbeat_s": 2}))
    for step in range(40):  # 40 empty frames, 0.25 s apart: 10 s
        r.detect("door", at=step * 0.25)
    seqs = [b["seq"] for b in r.published("door")]
    assert seqs == [0, 8, 16, 24, 32]  # the first frame, then every 2 s


# -- filters x policies ------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterCase:
    settings: dict[str, Any]
    kept: Row
    dropped: tuple[Row, ...]


FILTERS = {
    # Kept when the box centre lies in x 0.5..1.0, y 0.0..0.6 (an off-centre region, so a
    # swapped or mirrored check keeps the wrong faces).
    "roi": FilterCase(
        settings={"roi": {"x_min": 0.5, "y_min": 0.0, "x_max": 1.0, "y_max": 0.6}},
        kept=(0.9, 0.6, 0.2, 0.8, 0.5),  # centre (0.70, 0.35)
        dropped=(
            (0.9, 0.1, 0.2, 0.3, 0.5),  # centre (0.20, 0.35): left of it
            (0.9, 0.6, 0.7, 0.8, 0.9),  # centre (0.70, 0.80): below it
        ),
    ),
    "confidence_threshold": FilterCase(
        settings={"confidence_threshold": 0.7},
        kept=(0.75, 0.6, 0.2, 0.8, 0.5),
        dropped=((0.65, 0.1, 0.2, 0.3, 0.5),),
    ),
    "min_face_px": FilterCase(
        # 0.3 of 480 px = 144 px high; 0.1 of 480 = 48 px.
        settings={"min_face_px": 100},
        kept=(0.9, 0.6, 0.2, 0.8, 0.5),
        dropped=((0.9, 0.1, 0.2, 0.2, 0.3),),
    ),
}
# Frames as (kept faces, dropped faces present); the same timeline for every case.
FILTER_FRAMES = [(0, True), (0, True), (1, True), (1, True), (0, True)]
FILTER_POLICIES = {
    # policy: (seq, kept faces) published
    "every_frame": [(0, 0), (1, 0), (2, 1), (3, 1), (4, 0)],
    "on_faces": [(2, 1), (3, 1)],
    "on_change": [(0, 0), (2, 1), (4, 0)],
}


def run_filter_timeline(r: Rig, case: FilterCase) -> None:
    for step, (kept, with_dropped) in enumerate(FILTER_FRAMES):
        rows = (case.kept,) * kept + (case.dropped if with_dropped else ())
        r.detect("door", *rows, at=float(step))


@pytest.mark.parametrize("policy", sorted(FILTER_POLICIES))
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filters_drop_faces_before_the_publish_policy_sees_them(name: str, policy: str) -> None:
    case = FILTERS[name]
    r = rig(camera(publish={"policy": policy}, **case.settings))
    run_filter_timeline(r, case)
    bodies = r.published("door")
    assert [(b["seq"], len(b["faces"])) for b in bodies] == FILTER_POLICIES[policy]
    for body in bodies:
        for face in body["faces"]:  # only the kept face, as detected
            assert face["confidence"] == pytest.approx(case.kept[0], abs=1e-3)
            assert face["box_norm"] == pytest.approx(list(case.kept[1:]), abs=1e-4)
    assert r.counter("edge_facedet_faces_detected_total", "door") == 2


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_control_without_the_filter_the_dropped_faces_are_published(name: str) -> None:
    case = FILTERS[name]
    r = rig(camera(publish={"policy": "every_frame"}))
    run_filter_timeline(r, case)
    counts = [len(b["faces"]) for b in r.published("door")]
    assert counts == [kept + len(case.dropped) for kept, _ in FILTER_FRAMES]


def test_all_filters_at_once_each_drops_its_own_faces() -> None:
    settings = {**FILTERS["roi"].settings, "confidence_threshold": 0.7, "min_face_px": 100}
    r = rig(camera(publish={"policy": "every_frame"}, **settings))
    kept = (0.75, 0.6, 0.1, 0.8, 0.5)  # in the region, above 0.7, 192 px high
    dropped = (
        (0.9, 0.1, 0.1, 0.3, 0.5),  # outside the region only
        (0.65, 0.6, 0.1, 0.8, 0.5),  # below the threshold only
        (0.9, 0.6, 0.1, 0.7, 0.2),  # 48 px high only
    )
    r.detect("door", kept, *dropped, at=0.0)
    (body,) = r.published("door")
    assert [f["confidence"] for f in body["faces"]] == [0.75]


def test_each_camera_of_a_batch_uses_its_own_settings() -> None:
    roi = FILTERS["roi"]
    r = rig(
        camera("door", publish={"policy": "every_frame"}, **roi.settings),
        camera("yard", publish={"policy": "every_frame"}, confidence_threshold=0.95),
        camera("hall", publish={"policy": "every_frame"}),
    )
    rows = (roi.kept, *roi.dropped)
    r.detect_batch([("door", rows), ("yard", rows), ("hall", rows)], at=0.0)
    assert [len(b["faces"]) for b in r.published("door")] == [1]
    assert [len(b["faces"]) for b in r.published("yard")] == [0]
    assert [len(b["faces"]) for b in r.published("hall")] == [3]


def test_faces_message_fields_come_from_the_frame_and_the_clock() -> None:
    r = rig(camera(publish={"policy": "every_frame"}))
    r.detect("door", FACE, at=50.0, age_s=0.25)
    (body,) = r.published("door")
    assert body["event_id"] == "node-1-door-run-1-0"
    assert body["latency_ms"] == 250.0
    assert body["frame"] == {"width": WIDTH, "height": HEIGHT}
    assert body["capture_ts"] == "2026-12-05T12:00:00.000Z"
    assert body["faces"][0]["box"] == [256.0, 144.0, 320.0, 240.0]


# -- camera states ---------------------------------------------------------------------------


def status(state: CameraState, *, fps_out: float = 5.0, camera_id: str = "door") -> CameraStatus:
    return CameraStatus(
        camera_id=camera_id,
        state=state,
        fps_in=25.0,
        fps_out=fps_out,
        last_error=None if state is CameraState.STREAMING else "read failed",
        reconnects=0,
        frame_width=WIDTH,
        frame_height=HEIGHT,
    )


def test_states_are_sent_on_change_and_refreshed_every_state_refresh_s() -> None:
    r = rig(camera())
    streaming, reconnecting = CameraState.STREAMING, CameraState.RECONNECTING
    steps = [
        # (time, status reported, whether a state message is sent)
        (0.0, status(streaming, fps_out=5.0), True),  # first
        (3.0, status(streaming, fps_out=4.0), False),
        (STATE_REFRESH_S - 0.1, status(streaming, fps_out=4.5), False),
        (STATE_REFRESH_S, status(streaming, fps_out=4.8), True),  # refresh: fresh figures
        (STATE_REFRESH_S + 1, status(reconnecting, fps_out=0.0), True),  # change: at once
        (STATE_REFRESH_S + 1.5, status(reconnecting, fps_out=0.0), False),
        (STATE_REFRESH_S + 2, status(streaming, fps_out=5.0), True),
        (3 * STATE_REFRESH_S, status(streaming, fps_out=5.1), True),  # quiet, then a refresh
    ]
    for at, report, expected in steps:
        r.clock.now = at
        before = len(r.output.states("door"))
        r.pipeline.handle_status(report)
        assert (len(r.output.states("door")) > before) is expected, at
    bodies = r.states("door")
    assert [(b["state"], b["fps_out"]) for b in bodies] == [
        ("streaming", 5.0),
        ("streaming", 4.8),
        ("reconnecting", 0.0),
        ("streaming", 5.0),
        ("streaming", 5.1),
    ]
    assert bodies[2]["last_error"] == "read failed"


def test_states_of_cameras_refresh_independently_and_unknown_cameras_are_ignored() -> None:
    r = rig(camera("door"), camera("yard"))
    r.pipeline.handle_status(status(CameraState.STREAMING, camera_id="door"))
    r.clock.now += STATE_REFRESH_S / 2
    r.pipeline.handle_status(status(CameraState.STREAMING, camera_id="yard"))
    r.clock.now += STATE_REFRESH_S / 2  # door is due, yard is not
    for camera_id in ("door", "yard"):
        r.pipeline.handle_status(status(CameraState.STREAMING, camera_id=camera_id))
    r.pipeline.handle_status(status(CameraState.STREAMING, camera_id="ghost"))
    assert len(r.states("door")) == 2
    assert len(r.states("yard")) == 1
    assert r.output.states("ghost") == []


def test_frame_flow_figures_follow_the_clock() -> None:
    r = rig(camera())
    assert not r.pipeline.frames_flowing(window_s=5)
    assert r.pipeline.pipeline_alive(window_s=5)  # no camera streaming: nothing to flow
    r.pipeline.handle_status(status(CameraState.STREAMING))
    assert not r.pipeline.pipeline_alive(window_s=5)  # streaming, nothing inferred: wedged
    r.detect("door", at=r.clock.now)
    r.clock.now += 5.0
    assert r.pipeline.frames_flowing(window_s=5)
    r.clock.now += 0.1
    assert not r.pipeline.frames_flowing(window_s=5)
    assert not r.pipeline.pipeline_alive(window_s=5)
    r.pipeline.handle_status(status(CameraState.RECONNECTING))
    assert r.pipeline.pipeline_alive(window_s=5)


# -- tracks through the pipeline ----------------------------------------------------------------


def events(r: Rig, camera_id: str = "door") -> list[dict[str, Any]]:
    return [json.loads(p) for p in r.output.events(camera_id)]


def test_faces_carry_confirmed_track_ids_and_states_count_open_tracks() -> None:
    r = rig(camera("door", tracking={"min_hits": 2}, publish={"policy": "every_frame"}))
    r.pipeline.handle_status(status(CameraState.STREAMING))
    r.detect("door", FACE, at=1000.0)
    assert r.published("door")[-1]["faces"][0]["track"] is None  # tentative
    r.detect("door", FACE, at=1000.2)
    [new] = events(r)
    assert new["type"] == "new"
    assert r.published("door")[-1]["faces"][0]["track"] == new["event_id"]
    assert r.states("door")[-1]["open_tracks"] == 1  # re-published when the count changed
    # A candidate between low_confidence and the threshold keeps the track but is no face.
    r.detect("door", (0.4, 0.40, 0.30, 0.50, 0.50), at=1000.4)
    assert r.published("door")[-1]["faces"] == []
    assert [e["type"] for e in events(r)] == ["new"]
    r.pipeline.end_tracks()
    assert [(e["type"], e["end_reason"]) for e in events(r)] == [("new", None), ("end", "shutdown")]
    assert r.states("door")[-1]["open_tracks"] == 0
    r.detect("door", FACE, at=1000.6)
    r.detect("door", FACE, at=1000.8)
    assert len(events(r)) == 2  # nothing after the shutdown's ends


def test_results_captured_before_a_camera_went_down_open_no_track_after_its_end() -> None:
    r = rig(camera("door", tracking={"min_hits": 1}, publish={"policy": "every_frame"}))
    r.pipeline.handle_status(status(CameraState.STREAMING))
    r.detect("door", FACE, at=1000.0)
    r.pipeline.handle_status(status(CameraState.RECONNECTING))
    assert [(e["type"], e["end_reason"]) for e in events(r)] == [
        ("new", None),
        ("end", "camera_down"),
    ]
    # Still in the detector when the camera went down (an end of file, a reconnect).
    r.detect("door", FACE, at=1000.3, age_s=0.5)
    assert len(events(r)) == 2
    assert r.published("door")[-1]["faces"][0]["track"] is None
    r.pipeline.handle_status(status(CameraState.STREAMING))
    r.detect("door", FACE, at=1002.0)
    assert [e["type"] for e in events(r)] == ["new", "end", "new"]
