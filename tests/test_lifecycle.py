"""A camera's tracks become events: `new` once confirmed, throttled `update`s, exactly one `end`.

Runs the real tracker and quality score (tracking.lifecycle with tracking.tracker and
tracking.quality) on synthetic detections over a textured picture, with injected times.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from edge_facedet.config import CameraConfig
from edge_facedet.config.snapshots import SnapshotConfig, SnapshotMode
from edge_facedet.frames import ArrayPicture, Detections, Frame
from edge_facedet.outputs.snapshots.render import render_snapshot
from edge_facedet.tracking.events import EndReason, EventType, TrackEvent
from edge_facedet.tracking.keep import keep_face_region
from edge_facedet.tracking.lifecycle import CameraTracks, Observation

WIDTH, HEIGHT = 1280, 720
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
_RNG = np.random.default_rng(7)
# Texture, so every face crop has a sharpness and quality differs by size and confidence.
IMAGE = _RNG.integers(0, 255, size=(448, 448, 3), dtype=np.uint8)
PICTURE = ArrayPicture(_RNG.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8))


def camera(**overrides: Any) -> CameraConfig:
    settings: dict[str, Any] = {"id": "cam", "url": "rtsp://192.0.2.1/s"}
    settings.update(overrides)
    return CameraConfig.model_validate(settings)


def detections(*faces: tuple[float, float, float, float, float]) -> Detections:
    """Faces as (x_min, y_min, x_max, y_max px, confidence), sorted as the detector's are."""
    ordered = sorted(faces, key=lambda face: -face[4])
    boxes = np.array([face[:4] for face in ordered], np.float32).reshape(-1, 4)
    scale = np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32)
    return Detections(
        boxes_px=boxes,
        boxes_norm=boxes / scale,
        confidences=np.array([face[4] for face in ordered], np.float32),
    )


class Clock:
    def __init__(self, tracks: CameraTracks) -> None:
        self.tracks = tracks
        self.t = 100.0
        self.seq = 0
        self.events: list[TrackEvent] = []
        self.snapshots: list[Any] = []

    def frame(
        self, *faces: tuple[float, float, float, float, float], dt: float = 0.2
    ) -> Observation:
        self.t += dt
        frame = Frame(
            camera_id=self.tracks.camera_id,
            seq=self.seq,
            capture_time=T0 + timedelta(seconds=self.t),
            capture_monotonic=self.t,
            width=WIDTH,
            height=HEIGHT,
            image=IMAGE,
            picture=PICTURE,
        )
        self.seq += 1
        observation = self.tracks.observe(frame=frame, detections=detections(*faces))
        self.events.extend(observation.events)
        self.snapshots.extend(observation.snapshots)
        return observation

    def kinds(self) -> list[str]:
        return [event.type.value for event in self.events]


def face_at(x: float, *, size: float = 100.0, confidence: float = 0.9) -> tuple[float, ...]:
    return (x, 200.0, x + size, 200.0 + size, confidence)


def test_new_only_once_confirmed_then_one_end_when_lost() -> None:
    tracks = CameraTracks(
        camera=camera(detect_fps=10, tracking={"min_hits": 3, "max_age_s": 1.0}),
        id_prefix="n-cam-r",
    )
    clock = Clock(tracks)
    first = clock.frame(face_at(100))
    second = clock.frame(face_at(110))
    assert clock.events == []  # two hits of three: tentative
    assert first.track_ids == (None,) and second.track_ids == (None,)
    third = clock.frame(face_at(120))
    assert clock.kinds() == ["new"]
    new = clock.events[0]
    assert third.track_ids == (new.event_id,)
    assert new.event_id.startswith("n-cam-r-t")
    assert new.frames_seen == 3 and new.camera_id == "cam"
    assert new.start_time == T0 + timedelta(seconds=100.2)
    assert tracks.open_count == 1
    for step in range(5):  # still seen: no more events inside the update interval
        clock.frame(face_at(130 + 10 * step))
    assert clock.kinds() == ["new"]
    last_seen = clock.events[0].start_time + timedelta(seconds=0.2 * 7)
    clock.frame(dt=0.5)
    clock.frame(dt=0.6)  # 1.1 s without the face: lost
    assert clock.kinds() == ["new", "end"]
    end = clock.events[-1]
    assert end.event_id == new.event_id
    assert end.end_reason is EndReason.LOST
    assert end.last_time == last_seen
    assert end.end_time == last_seen + timedelta(seconds=1.0)
    assert end.frames_seen == 8
    assert tracks.open_count == 0
    clock.frame(dt=5.0)
    assert clock.kinds() == ["new", "end"]  # nothing after end


def test_a_track_outlives_several_detect_periods_at_low_rates() -> None:
    # At 1 detection/s, max_age_s 2 would end a track after two missed frames; it lives 6 s.
    slow = camera(detect_fps=1, tracking={"min_hits": 1, "max_age_s": 2.0})
    clock = Clock(CameraTracks(camera=slow, id_prefix="p"))
    clock.frame(face_at(100), dt=1.0)
    for _ in range(5):
        clock.frame(dt=1.0)
    clock.frame(face_at(105), dt=1.0)  # 6 s later: the same track
    assert clock.kinds() == ["new"]
    for _ in range(7):
        clock.frame(dt=1.0)
    assert clock.kinds() == ["new", "end"]
    assert clock.events[-1].end_time == clock.events[-1].last_time + timedelta(seconds=6)


def test_a_one_frame_false_positive_makes_no_event() -> None:
    tracks = CameraTracks(camera=camera(), id_prefix="n-cam-r")
    clock = Clock(tracks)
    clock.frame(face_at(600, confidence=0.95))
    for _ in range(20):
        clock.frame()
    assert clock.events == []


def test_updates_are_throttled_and_forced() -> None:
    tracking = {"min_hits": 1, "update_interval_s": 1.0, "max_update_interval_s": 5.0}
    tracks = CameraTracks(camera=camera(tracking=tracking), id_prefix="p")
    clock = Clock(tracks)
    clock.frame(face_at(100, size=60, confidence=0.6))
    assert clock.kinds() == ["new"]
    # A much better face 0.2 s later: the update waits for update_interval_s.
    clock.frame(face_at(102, size=120, confidence=0.95))
    assert clock.kinds() == ["new"]
    for _ in range(4):
        clock.frame(face_at(104, size=120, confidence=0.95))
    assert clock.kinds() == ["new", "update"]
    update = clock.events[-1]
    assert update.best.confidence == pytest.approx(0.95)
    assert update.best.height_px == pytest.approx(120)
    # The same face, no better: no update until max_update_interval_s.
    for _ in range(23):
        clock.frame(face_at(104, size=120, confidence=0.95))
    assert clock.kinds() == ["new", "update"]
    clock.frame(face_at(104, size=120, confidence=0.95))
    clock.frame(face_at(104, size=120, confidence=0.95))
    assert clock.kinds() == ["new", "update", "update"]


def test_camera_down_and_shutdown_end_every_announced_track_once() -> None:
    tracks = CameraTracks(camera=camera(tracking={"min_hits": 2}), id_prefix="p")
    clock = Clock(tracks)
    clock.frame(face_at(100), face_at(700))
    clock.frame(face_at(105), face_at(705))
    clock.frame(face_at(1000, confidence=0.9))  # tentative: never announced
    assert clock.kinds() == ["new", "new"]
    down = tracks.end_all(reason=EndReason.CAMERA_DOWN, at=T0)
    assert [event.type for event in down.events] == [EventType.END, EventType.END]
    assert {event.event_id for event in down.events} == {event.event_id for event in clock.events}
    assert all(event.end_reason is EndReason.CAMERA_DOWN for event in down.events)
    assert all(event.end_time == T0 for event in down.events)
    assert tracks.end_all(reason=EndReason.SHUTDOWN, at=T0).events == ()
    assert tracks.open_count == 0


def test_snapshots_follow_the_best_face_only_with_snapshots_on() -> None:
    off = Clock(CameraTracks(camera=camera(tracking={"min_hits": 1}), id_prefix="p"))
    off.frame(face_at(100))
    assert off.kinds() == ["new"] and off.snapshots == [None]
    assert off.events[0].snapshot is False and off.events[0].snapshot_source is None

    on_camera = camera(
        tracking={"min_hits": 1, "update_interval_s": 10}, snapshots={"mode": "blurred_frame"}
    )
    clock = Clock(CameraTracks(camera=on_camera, id_prefix="p"))
    clock.frame(face_at(100, size=90, confidence=0.6), face_at(800, size=80, confidence=0.7))
    assert clock.kinds() == ["new", "new"]
    assert all(request is not None for request in clock.snapshots)
    first = clock.snapshots[0]
    assert first.picture is PICTURE
    assert len(first.boxes_norm) == 2  # both faces of that frame, for blurred_frame
    assert clock.events[0].snapshot is True and clock.events[0].snapshot_source == "detect"
    # The first face gets better (no update yet: interval 10 s); the second stays the same.
    clock.frame(face_at(102, size=110, confidence=0.95), face_at(800, size=80, confidence=0.7))
    clock.frame(dt=3.0)  # both lost
    ends = clock.events[-2:]
    assert [event.type for event in ends] == [EventType.END, EventType.END]
    # Detections come by confidence: the 0.7 face was detection 0 in the first frame.
    steady, improving = clock.events[0].event_id, clock.events[1].event_id
    requests = dict(zip((event.event_id for event in ends), clock.snapshots[-2:], strict=True))
    better = requests[improving]
    assert better is not None
    assert better.box_norm[3] - better.box_norm[1] == pytest.approx(110 / HEIGHT)
    assert requests[steady] is None  # its best was already published


def test_track_ids_differ_between_cameras_and_runs() -> None:
    ids = []
    for prefix in ("node-a-run1", "node-b-run1", "node-a-run2"):
        clock = Clock(CameraTracks(camera=camera(tracking={"min_hits": 1}), id_prefix=prefix))
        clock.frame(face_at(100))
        ids.append(clock.events[0].event_id)
    assert len(set(ids)) == 3


def crop_request(camera_config: CameraConfig) -> tuple[Any, TrackEvent]:
    """The snapshot request of the first `new` of a frame with two faces, and that event."""
    clock = Clock(CameraTracks(camera=camera_config, id_prefix="p"))
    clock.frame(face_at(300, size=90, confidence=0.8), face_at(900, size=60, confidence=0.7))
    assert clock.kinds() == ["new", "new"]
    return clock.snapshots[0], clock.events[0]


def test_crop_cameras_keep_only_the_face_region_and_render_the_same_jpeg() -> None:
    """A track holds its best picture until the next event: a crop camera keeps the face's
    region (a copy), not the 2.7 MB frame, and the JPEG is byte for byte the same."""
    settings = {"mode": "crop", "margin": 0.4, "max_size_px": 1280}
    request, event = crop_request(camera(tracking={"min_hits": 1}, snapshots=settings))
    kept = request.picture
    assert isinstance(kept, ArrayPicture)
    assert kept.array.nbytes < PICTURE.array.nbytes / 25  # 166x167 of 1280x720
    assert not np.shares_memory(kept.array, PICTURE.array)
    assert request.boxes_norm == (request.box_norm,)
    whole_box = event.best.box_norm
    config = SnapshotConfig.model_validate(settings)
    from_region = render_snapshot(
        picture=kept, mode=SnapshotMode.CROP, config=config,
        box_norm=request.box_norm, boxes_norm=request.boxes_norm,
    )  # fmt: skip
    from_frame = render_snapshot(
        picture=PICTURE, mode=SnapshotMode.CROP, config=config,
        box_norm=whole_box, boxes_norm=(whole_box,),
    )  # fmt: skip
    assert from_region == from_frame


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"snapshots": {"mode": "frame"}}, id="frame-mode"),
        pytest.param(
            {"snapshots": {"mode": "crop"}, "detect_url": "rtsp://192.0.2.1/sub"},
            id="main-stream-matches-the-whole-picture",
        ),
    ],
)
def test_other_cameras_keep_the_whole_picture(overrides: dict[str, Any]) -> None:
    request, _ = crop_request(camera(tracking={"min_hits": 1}, **overrides))
    assert request.picture is PICTURE
    assert len(request.boxes_norm) == 2


def test_a_kept_region_renders_the_whole_frames_crop_at_edges_and_any_margin() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        size = float(rng.uniform(8, 300))
        # Often past an edge, where both crops are clamped.
        x = float(rng.uniform(-0.2 * size, WIDTH - 0.8 * size))
        y = float(rng.uniform(-0.2 * size, HEIGHT - 0.8 * size))
        box = tuple(
            float(v)
            for v in np.array([x / WIDTH, y / HEIGHT, (x + size) / WIDTH, (y + size) / HEIGHT])
            .clip(0, 1)
            .astype(np.float32)
        )
        margin = float(rng.choice([0.0, 0.13, 0.4, 1.0, 2.0]))
        kept = keep_face_region(PICTURE, box_norm=box, margin=margin)
        config = SnapshotConfig(mode=SnapshotMode.CROP, margin=margin, max_size_px=4096)
        whole = render_snapshot(
            picture=PICTURE, mode=SnapshotMode.CROP, config=config, box_norm=box, boxes_norm=()
        )
        region = render_snapshot(
            picture=kept.picture, mode=SnapshotMode.CROP, config=config,
            box_norm=kept.box_norm, boxes_norm=(),
        )  # fmt: skip
        assert region == whole, (box, margin)
