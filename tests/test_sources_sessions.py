"""Capture sessions read scripted sources in the test's own thread: each kind's rules."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import numpy as np
import pytest

from edge_facedet.backoff import Backoff
from edge_facedet.frames import ArrayPicture
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.sources.decoders import DecodeOptions, Decoder
from edge_facedet.sources.faults import CameraFaultError
from edge_facedet.sources.sessions import (
    FILE_READ_FAILURES_AT_END,
    DeviceSession,
    FileSession,
    LiveSession,
    ReaderContext,
    SessionEnd,
    session_for,
)
from edge_facedet.sources.settings import ReaderSettings
from edge_facedet.sources.status import CameraState, CameraStatus, ReaderMetrics, StatusBoard

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

    from edge_facedet.frames import Frame, Picture

SIZE = (64, 32)


class ScriptedSource:
    """A `VideoSource` whose grabs follow a script: True a frame, False a failed grab."""

    def __init__(self, grabs: list[bool], *, fps: float = 25.0, can_rewind: bool = True) -> None:
        self._script = grabs
        self._next = 0
        self._fps = fps
        self._can_rewind = can_rewind
        self.rewinds = 0

    def grab(self) -> bool:
        grabbed = self._next < len(self._script) and self._script[self._next]
        self._next += 1
        return grabbed

    def retrieve(self, *, size: tuple[int, int]) -> tuple[NDArray[np.uint8], int, int]:
        return np.zeros((size[1], size[0], 3), dtype=np.uint8), 320, 240

    def picture(self) -> Picture:
        return ArrayPicture(array=np.zeros((240, 320, 3), dtype=np.uint8))

    def stream_time_s(self) -> float:
        return math.nan

    def fps(self) -> float:
        return self._fps

    def rewind(self) -> bool:
        if self._can_rewind:
            self.rewinds += 1
            self._next = 0
        return self._can_rewind

    def release(self) -> None:
        pass


class ListSink:
    """Keeps the frames; asks the session to stop after `stop_after` of them."""

    def __init__(self, *, stop: threading.Event, stop_after: int | None = None) -> None:
        self.frames: list[Frame] = []
        self._stop = stop
        self._stop_after = stop_after

    def put(self, frame: Frame) -> None:
        self.frames.append(frame)
        if self._stop_after is not None and len(self.frames) >= self._stop_after:
            self._stop.set()

    def claim(self) -> bool:
        return True

    def wait_until_empty(self, timeout: float) -> bool:
        return True


def make_session(
    url: str, *, stop_after: int | None = None, **options: object
) -> tuple[Callable[[ScriptedSource], SessionEnd], ListSink, list[CameraStatus], Metrics]:
    settings = ReaderSettings(
        camera_id="cam", url=url, detect_fps=12.5, input_size=SIZE, **options,  # type: ignore[arg-type]
    )  # fmt: skip
    stop = threading.Event()
    sink = ListSink(stop=stop, stop_after=stop_after)
    statuses: list[CameraStatus] = []
    metrics = Metrics()
    session = session_for(
        ReaderContext(
            settings=settings,
            safe_url=url,
            secrets=(),
            stop=stop,
            board=StatusBoard(camera_id="cam", report=statuses.append),
            metrics=ReaderMetrics.for_camera(metrics, camera_id="cam"),
            backoff=Backoff(base=1.0, cap=1.0),
            sink=sink,
            deliver=sink.put,
        )
    )
    return session.read, sink, statuses, metrics


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"edge_facedet_{name}", {"camera": "cam"})
    return value or 0.0


@pytest.mark.parametrize(
    ("url", "kind"),
    [("rtsp://cam/x", LiveSession), ("/media/a.mp4", FileSession), ("/dev/video0", DeviceSession)],
)
def test_each_kind_of_source_gets_its_session(url: str, kind: type) -> None:
    read, *_ = make_session(url)
    assert type(read.__self__) is kind  # type: ignore[attr-defined]


def test_a_file_hands_on_the_due_frames_of_its_media_clock_then_finishes() -> None:
    read, sink, statuses, metrics = make_session("/media/a.mp4", realtime=False)
    assert read(ScriptedSource([True] * 10)) is SessionEnd.FINISHED
    assert [frame.seq for frame in sink.frames] == [0, 1, 2, 3, 4]  # every other frame
    assert (sink.frames[0].width, sink.frames[0].height) == (320, 240)
    assert sink.frames[0].image.shape == (SIZE[1], SIZE[0], 3)
    assert sample(metrics, "frames_captured_total") == 10
    assert sample(metrics, "frames_skipped_total") == 5
    assert sample(metrics, "camera_up") == 1
    assert [s.state for s in statuses][:1] == [CameraState.STREAMING]
    assert statuses[-1].frame_width == 320


def test_a_damaged_spot_in_a_file_is_skipped() -> None:
    damaged = [True] * 4 + [False] * (FILE_READ_FAILURES_AT_END - 1) + [True] * 4
    read, sink, _, metrics = make_session("/media/a.mp4", realtime=False)
    assert read(ScriptedSource(damaged)) is SessionEnd.FINISHED
    assert sample(metrics, "frames_captured_total") == 8
    assert len(sink.frames) == 4


def test_a_file_without_a_readable_frame_is_a_fault() -> None:
    read, *_ = make_session("/media/a.mp4", realtime=False)
    with pytest.raises(CameraFaultError, match=r"^no readable frame in /media/a\.mp4$"):
        read(ScriptedSource([]))


def test_a_looping_file_rewinds_and_numbers_its_frames_on() -> None:
    read, sink, _, _ = make_session("/media/a.mp4", realtime=False, loop=True, stop_after=12)
    source = ScriptedSource([True] * 10)
    assert read(source) is SessionEnd.STOPPED
    assert source.rewinds == 2
    assert [frame.seq for frame in sink.frames] == list(range(12))


def test_a_looping_file_that_cannot_rewind_asks_to_be_reopened() -> None:
    read, _, _, _ = make_session("/media/a.mp4", realtime=False, loop=True)
    assert read(ScriptedSource([True] * 3, can_rewind=False)) is SessionEnd.REOPEN


def test_a_failed_read_of_a_live_stream_is_a_fault_naming_the_keyframe_rule() -> None:
    read, *_ = make_session("rtsp://cam/x")
    with pytest.raises(
        CameraFaultError, match=r"^read failed on rtsp://cam/x after .*timed out\)$"
    ):
        read(ScriptedSource([True, True]))
    keyframes = DecodeOptions(decoder=Decoder.PYAV, keyframes_only=True)
    read, *_ = make_session("rtsp://cam/x", decode=keyframes)
    with pytest.raises(CameraFaultError, match="keyframes_only needs stall_timeout_s above"):
        read(ScriptedSource([True]))


def test_a_device_fails_on_its_first_failed_read() -> None:
    read, sink, _, _ = make_session("/dev/video0")
    with pytest.raises(CameraFaultError, match=r"^read failed on /dev/video0 "):
        read(ScriptedSource([True, False, True]))
    assert len(sink.frames) == 1
