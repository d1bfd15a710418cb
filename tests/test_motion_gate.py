"""Motion gating through the real dispatcher and reader, on the shared room clip: the empty
room is gated but for rechecks every recheck_interval_s, people walking in are sent, faces in
view send every due frame, and every due frame is counted once.

`one-by-one-person-detection.mp4` is a fixed camera at 10 fps on an empty room; the first
person walks in at frame 60 (6 s) and reaches the table by frame 90.
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pytest

from edge_facedet.config import ServiceConfig
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.sources.activity import CameraActivity
from edge_facedet.sources.dispatch import FrameDispatcher
from edge_facedet.sources.gate import GateSettings
from edge_facedet.sources.opencv import OpenCvSource
from edge_facedet.sources.reader import CameraReader
from edge_facedet.sources.settings import ReaderSettings
from edge_facedet.sources.status import ReaderMetrics, StatusBoard
from tests.support.media import FFMPEG
from tests.support.paths import MEDIA

if TYPE_CHECKING:
    from pathlib import Path

    from edge_facedet.frames import Frame

ROOM = MEDIA / "sample-videos" / "one-by-one-person-detection.mp4"
ROOM_FPS = 10
PERSON_ENTERS = 60
RECHECK_S = 2.0
DETECT_FPS = 5.0


class RecordingSink:
    """A FrameSink with room for every frame; records (clip frame index, frame)."""

    def __init__(self) -> None:
        self.index = -1
        self.sent: dict[int, Frame] = {}

    def put(self, frame: Frame) -> None:
        self.sent[self.index] = frame

    def claim(self) -> bool:
        return True

    def wait_until_empty(self, timeout: float) -> bool:
        del timeout
        return True


def dispatch_room(
    *, activity: CameraActivity, frames: int = PERSON_ENTERS + 30
) -> tuple[RecordingSink, list[int], float]:
    """The clip's first `frames` through a gated dispatcher on its media clock: the sink, the
    due frames' indices, and the gated counter."""
    metrics = Metrics()
    series = ReaderMetrics.for_camera(metrics, camera_id="room")
    sink = RecordingSink()
    dispatcher = FrameDispatcher(
        settings=ReaderSettings(
            camera_id="room",
            url=str(ROOM),
            detect_fps=DETECT_FPS,
            input_size=(448, 448),
            gate=GateSettings(recheck_interval_s=RECHECK_S),
            activity=activity,
        ),
        safe_url="room.mp4",
        sink=sink,
        deliver=sink.put,
        board=StatusBoard(camera_id="room", report=lambda _status: None),
        metrics=series,
        stop=threading.Event(),
        lossless=False,
    )
    source = OpenCvSource(
        url=str(ROOM), is_device=False, threads=1, open_timeout_s=10, read_timeout_s=10
    )
    due: list[int] = []
    try:
        for index in range(frames):
            assert source.grab()
            if dispatcher.is_due(index / ROOM_FPS):
                due.append(index)
                sink.index = index
                dispatcher.dispatch_due(
                    source=source,
                    capture_time=datetime.now(timezone.utc),
                    arrived=time.monotonic(),
                    lag_s=0.0,
                )
    finally:
        source.release()
    gated = metrics.registry.get_sample_value("edge_facedet_frames_gated_total", {"camera": "room"})
    assert gated is not None
    return sink, due, gated


def test_the_empty_room_is_gated_but_for_rechecks_and_people_walking_in_are_sent() -> None:
    sink, due, gated = dispatch_room(activity=CameraActivity())
    empty = [index for index in due if index < PERSON_ENTERS]
    walking = [index for index in due if index >= PERSON_ENTERS]
    # The empty room: one recheck every recheck_interval_s (the first frame is one), the rest
    # gated and counted.
    rechecks = [index for index in empty if index in sink.sent]
    step = int(RECHECK_S * ROOM_FPS)
    assert rechecks == list(range(0, PERSON_ENTERS, step))
    assert all(sink.sent[index].recheck for index in rechecks)
    assert gated == len(due) - len(sink.sent)
    assert gated >= len(empty) - len(rechecks)
    # A person walking in: every due frame, as a frame with motion (not a recheck).
    assert all(index in sink.sent for index in walking)
    assert not any(sink.sent[index].recheck for index in walking)
    # Handed-on frames are numbered without gaps: gated frames take no sequence number.
    assert [frame.seq for frame in sink.sent.values()] == list(range(len(sink.sent)))


def test_faces_in_view_send_every_due_frame_of_a_still_scene() -> None:
    activity = CameraActivity()
    activity.update(faces=0, open_tracks=1)
    sink, due, gated = dispatch_room(activity=activity, frames=PERSON_ENTERS)
    assert sorted(sink.sent) == due
    assert gated == 0
    # The first frame is a recheck only if nothing else sends it: here the open track does.
    assert not any(frame.recheck for frame in sink.sent.values())


def test_the_flag_follows_the_last_processed_frame() -> None:
    activity = CameraActivity()
    activity.update(faces=1, open_tracks=0)
    assert activity.faces_in_view
    activity.update(faces=0, open_tracks=0)
    assert not activity.faces_in_view


@pytest.fixture(scope="module")
def room_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The room clip's first 9 s (empty for 6, then the first person), stream-copied."""
    target = tmp_path_factory.mktemp("gate") / "room-9s.mp4"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(ROOM), "-t", "9",
         "-c", "copy", "-an", str(target)],
        check=True, timeout=60,
    )  # fmt: skip
    return target


def test_a_reader_counts_every_frame_once_with_gating_on(room_clip: Path) -> None:
    camera = ServiceConfig.model_validate(
        {
            "cameras": [
                {
                    "id": "room",
                    "url": str(room_clip),
                    "realtime": False,
                    "detect_fps": DETECT_FPS,
                    "motion": {"recheck_interval_s": RECHECK_S},
                }
            ]
        }
    ).cameras[0]
    metrics = Metrics()
    metrics.register_camera("room")
    sink = RecordingSink()
    frames: list[Frame] = []
    sink.put = frames.append  # type: ignore[method-assign]
    reader = CameraReader(
        settings=ReaderSettings.from_camera(
            camera, url=str(room_clip), input_size=(448, 448), activity=CameraActivity()
        ),
        sink=sink,
        on_status=lambda _status: None,
        metrics=metrics,
    )
    reader.start()
    assert reader.join(30.0)

    def count(name: str) -> float:
        value = metrics.registry.get_sample_value(
            f"edge_facedet_frames_{name}_total", {"camera": "room"}
        )
        assert value is not None
        return value

    captured, skipped, gated = count("captured"), count("skipped"), count("gated")
    assert captured >= 90  # a stream copy ends at a packet boundary
    # captured = skipped + stale + gated + inferred + dropped (nothing stale or dropped here,
    # and every frame handed on is inferred).
    assert captured == skipped + count("stale") + gated + len(frames) + count("dropped")
    assert gated >= 20  # of the 30 due frames of the 6 s empty room, 3 are rechecks
    assert sum(frame.recheck for frame in frames) == 3


class _GreySource:
    """A source whose small grey picture is given: the gate reads only `gray`."""

    def __init__(self) -> None:
        self.picture = np.full((120, 213), 90, np.uint8)

    def gray(self, *, height: int) -> np.ndarray:
        assert height == self.picture.shape[0]
        return self.picture


def test_a_whole_view_change_is_sent_not_gated() -> None:
    # A close-up passing a fixed camera changes most of the picture on several due frames in
    # a row: the detector recalibrates each time, and the gate must still send them.
    from edge_facedet.sources.gate import MotionGate, Verdict

    source = _GreySource()
    gate = MotionGate(
        settings=GateSettings(recheck_interval_s=100.0),
        activity=CameraActivity(),
        detect_fps=DETECT_FPS,
    )
    verdicts = []
    for step in range(12):
        verdicts.append(gate.decide(source=source, clock_s=step / DETECT_FPS))
        gate.sent(clock_s=step / DETECT_FPS)
    assert verdicts[-1] is Verdict.GATED  # a still picture is gated once calibrated
    sent = []
    for step in range(12, 17):
        # Two thirds of the view change brightly on every frame (something close to the lens).
        source.picture = source.picture.copy()
        source.picture[:, :140] = 30 if step % 2 else 220
        sent.append(gate.decide(source=source, clock_s=step / DETECT_FPS))
    assert sent == [Verdict.MOTION] * 5, sent
