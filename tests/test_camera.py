"""CameraReader against real sources: H.264 files made from real footage and a real RTSP server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import random
import socket
import threading
import time
from datetime import timezone
from typing import TYPE_CHECKING
from unittest import mock

import av
import cv2
import numpy as np
import pytest

from edge_facedet.backoff import Backoff
from edge_facedet.frames import Frame
from edge_facedet.inference.scheduler import Scheduler
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.sources import sessions
from edge_facedet.sources.decoders import DecodeOptions, Decoder, prefer_rtsp_over_tcp
from edge_facedet.sources.reader import (
    READER_THREAD_PREFIX,
    CameraReader,
    CameraState,
    CameraStatus,
    ReaderSettings,
    ReconnectPolicy,
    StreamTimeouts,
)
from tests.support.load import load_slack
from tests.support.media import run_ffmpeg
from tests.support.paths import HIKERS_VIDEO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from numpy.typing import NDArray

    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer

pytestmark = pytest.mark.slow

INPUT_SIZE = (448, 256)  # not square, so a swapped width/height shows
SECRET = "SuperSecret123"  # noqa: S105 - a fake credential the tests hunt for
WAIT_S = 20.0  # upper bound for anything a test waits for; healthy runs take a fraction
BOTH_DECODERS = pytest.mark.parametrize("decoder", list(Decoder))
TIMEOUTS = StreamTimeouts(open_s=2.0, read_s=2.0, stall_s=2.0)
RECONNECT = ReconnectPolicy(initial_s=0.2, max_s=1.0)


@pytest.fixture(autouse=True)
def _rtsp_over_tcp() -> Iterator[None]:
    """RTSP over TCP, as the service sets at start; the environment is restored after."""
    with mock.patch.dict(os.environ):
        prefer_rtsp_over_tcp()
        yield


@dataclasses.dataclass(frozen=True)
class CallbackSink:
    """A `FrameSink` that calls `put` with every frame and always has room."""

    put: Callable[[Frame], None]

    def claim(self) -> bool:
        return True

    def wait_until_empty(self, timeout: float) -> bool:
        return True


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GiveUpAfter(ReconnectPolicy):
    """A reconnect policy that fails the reader after `max_attempts` reconnects (the
    production policy never gives up)."""

    max_attempts: int

    def gives_up(self, *, attempts: int) -> bool:
        return attempts >= self.max_attempts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeededReconnect(ReconnectPolicy):
    """The production policy with seeded jitter: the delays a reader draws are known."""

    seed: int = 0

    def backoff(self) -> Backoff:
        rng = random.Random(self.seed)  # noqa: S311 - jitter, not security
        return Backoff(base=self.initial_s, cap=self.max_s, rng=rng)


def logged_reconnects(caplog: pytest.LogCaptureFixture, camera_id: str) -> list[tuple[int, float]]:
    """(attempt, delay) of each reconnect the reader announced, in order (DEBUG included)."""
    return [
        (int(r.args[2]), float(r.args[3]))  # type: ignore[index, call-overload, arg-type]
        for r in caplog.records
        if "reconnect attempt" in r.getMessage() and r.args and r.args[0] == camera_id  # type: ignore[index]
    ]


class Recorder:
    """The consumer side of a reader (its `FrameSink` and status callback): keeps every frame
    and status with its arrival time."""

    def __init__(self, *, room: Callable[[float], bool] = lambda _timeout: True) -> None:
        self.frames: list[Frame] = []
        self.frame_arrivals: list[float] = []
        self.statuses: list[CameraStatus] = []
        self._room = room
        self._changed = threading.Condition()

    def put(self, frame: Frame) -> None:
        with self._changed:
            self.frames.append(frame)
            self.frame_arrivals.append(time.monotonic())
            self._changed.notify_all()

    def claim(self) -> bool:
        return True

    def wait_until_empty(self, timeout: float) -> bool:
        return self._room(timeout)

    def on_status(self, status: CameraStatus) -> None:
        with self._changed:
            self.statuses.append(status)
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[], bool], *, what: str, timeout: float = WAIT_S
    ) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout=timeout):
                last = self.statuses[-1] if self.statuses else None
                pytest.fail(f"timed out waiting for {what}; last status {last}")

    def wait_for_state(self, state: CameraState, *, timeout: float = WAIT_S) -> None:
        self.wait_for(lambda: any(s.state is state for s in self.statuses), what=str(state),
                      timeout=timeout)  # fmt: skip

    def wait_for_frames(self, count: int, *, timeout: float = WAIT_S) -> None:
        self.wait_for(lambda: len(self.frames) >= count, what=f"{count} frames", timeout=timeout)

    def states(self) -> list[CameraState]:
        with self._changed:
            states = [s.state for s in self.statuses]
        # Collapse repeats (rate reports): the sequence of state changes.
        return [s for i, s in enumerate(states) if i == 0 or states[i - 1] is not s]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def decoder() -> Decoder:
    """The decoder `make_reader` uses; tests marked BOTH_DECODERS run with each."""
    return Decoder.OPENCV


@pytest.fixture
def make_reader(
    metrics: Metrics, decoder: Decoder
) -> Iterator[Callable[..., tuple[CameraReader, Recorder]]]:
    """Factory for started readers with a recorder; every reader is stopped and joined."""
    readers: list[CameraReader] = []

    def make(
        *, camera_id: str, url: str, room: Callable[[float], bool] | None = None,
        **options: object,
    ) -> tuple[CameraReader, Recorder]:  # fmt: skip
        recorder = Recorder() if room is None else Recorder(room=room)
        settings = ReaderSettings(
            camera_id=camera_id,
            url=url,
            detect_fps=5.0,
            input_size=INPUT_SIZE,
            timeouts=TIMEOUTS,
            reconnect=RECONNECT,
            decode=DecodeOptions(decoder=decoder),
        )
        reader = CameraReader(
            settings=dataclasses.replace(settings, **options),  # type: ignore[arg-type]
            sink=recorder,
            on_status=recorder.on_status,
            metrics=metrics,
        )
        readers.append(reader)
        reader.start()
        return reader, recorder

    yield make
    for reader in readers:
        reader.stop()
    for reader in readers:
        assert reader.join(timeout=5.0), f"{reader.status.camera_id} did not stop"


def counter(metrics: Metrics, name: str, camera_id: str) -> float:
    value = metrics.registry.get_sample_value(f"edge_facedet_{name}_total", {"camera": camera_id})
    return value or 0.0


def gauge(metrics: Metrics, name: str, camera_id: str) -> float:
    value = metrics.registry.get_sample_value(f"edge_facedet_{name}", {"camera": camera_id})
    assert value is not None
    return value


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes TCP handshakes, nothing
    ever answers (a camera whose firmware hung)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- files ---------------------------------------------------------------------------------


@BOTH_DECODERS
def test_file_camera_paced_at_detect_fps_with_correct_frames(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    clip = h264_clip.clip(seconds=4)  # 100 frames; the test needs 80
    reader, recorder = make_reader(camera_id="file", url=str(clip), detect_fps=5.0)

    recorder.wait_for_frames(16)
    reader.stop()
    assert reader.join(timeout=3.0)

    frames = list(recorder.frames)
    span_s = (recorder.frame_arrivals[-1] - recorder.frame_arrivals[0]) / (len(frames) - 1) * 15
    # 25 fps file, 5 fps out, paced in real time: 15 intervals of 0.2 s (~3 s), not a burst
    # (unpaced, the 16 frames come within half a second). A starved reader arrives late, and
    # the pacer then catches up on at most 1 s: the bars widen with the load, capped.
    slow = load_slack(cap=2.0, what="file pacing")
    logging.getLogger(__name__).info("15 intervals in %.2f s", span_s)
    assert 1.5 <= span_s <= 3.6 * slow, (span_s, slow)
    assert [f.seq for f in frames] == list(range(len(frames)))
    for frame in frames:
        assert frame.camera_id == "file"
        assert (frame.width, frame.height) == (1280, 720)
        assert frame.image.shape == (*INPUT_SIZE[::-1], 3)
        assert frame.image.dtype.name == "uint8"
        assert frame.capture_time.tzinfo is timezone.utc
    assert all(a.capture_monotonic < b.capture_monotonic for a, b in itertools.pairwise(frames))
    assert all(a.capture_time <= b.capture_time for a, b in itertools.pairwise(frames))

    captured = counter(metrics, "frames_captured", "file")
    skipped = counter(metrics, "frames_skipped", "file")
    assert captured - skipped == len(frames)
    assert 0.7 <= skipped / captured <= 0.9  # four of every five frames are only grabbed

    rates = [s for s in recorder.statuses if s.state is CameraState.STREAMING and s.fps_in > 0]
    assert rates, "no rate report while streaming"
    logging.getLogger(__name__).info(
        "last rates: in %.1f, out %.1f fps", rates[-1].fps_in, rates[-1].fps_out
    )
    assert 20 / slow <= rates[-1].fps_in <= 30 * slow, (rates[-1], slow)
    assert 3.5 / slow <= rates[-1].fps_out <= 6.5 * slow, (rates[-1], slow)
    assert reader.status.state is CameraState.STOPPED
    assert gauge(metrics, "camera_up", "file") == 0


@BOTH_DECODERS
def test_file_read_as_fast_as_possible_holds_detect_fps_on_media_clock_then_stops_at_end(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    clip = h264_clip.clip(seconds=4)  # 100 frames at 25 fps
    reader, recorder = make_reader(camera_id="bench", url=str(clip), realtime=False)

    assert reader.join(timeout=WAIT_S)
    # Every fifth frame of the file's own timeline, however fast it was read.
    assert len(recorder.frames) == 20
    assert counter(metrics, "frames_captured", "bench") == 100
    assert counter(metrics, "frames_skipped", "bench") == 80
    # A file without loop is a finished source, not a fault.
    assert recorder.states() == [CameraState.STARTING, CameraState.STREAMING, CameraState.STOPPED]
    assert reader.status.reconnects == 0
    assert reader.status.last_error is None


async def test_lossless_file_camera_hands_every_frame_to_a_slower_detector_and_drops_none(
    h264_clip: ClipMaker, metrics: Metrics
) -> None:
    """`realtime: false` with a real slot and scheduler: the reader waits for room."""
    from tests.test_scheduler import FakeDetector, until
    from tests.test_scheduler import Recorder as BatchRecorder

    clip = h264_clip.clip(seconds=2)  # 50 frames at 25 fps
    # 8 ms per frame, one request: slower than this reader decodes, so a reader that did not
    # wait would replace frames in the slot.
    detector = FakeDetector(batch_size=1, max_inflight=1, delay_s=0.008)
    batches = BatchRecorder()
    dropped: list[str] = []
    scheduler = Scheduler(
        detector=detector, camera_ids=["lossless"], on_result=batches, on_drop=dropped.append
    )
    slot = scheduler.slot("lossless")
    statuses = Recorder()
    reader = CameraReader(
        settings=ReaderSettings(
            camera_id="lossless",
            url=str(clip),
            detect_fps=25.0,
            input_size=INPUT_SIZE,
            realtime=False,
        ),
        sink=slot,
        on_status=statuses.on_status,
        metrics=metrics,
    )
    serving = asyncio.create_task(scheduler.run())
    reader.start()
    try:
        # The file does not loop: the reader ends by itself after its last frame, and once
        # the slot is empty and nothing is in flight every frame it handed on is recorded.
        assert await asyncio.to_thread(reader.join, WAIT_S)
        await until(lambda: slot.wait_until_empty(0) and scheduler.inflight == 0)
    finally:
        reader.stop()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    assert reader.join(timeout=5.0)
    assert [frame.seq for frame in batches.frames] == list(range(50))
    assert dropped == []
    assert slot.dropped == 0
    assert counter(metrics, "frames_captured", "lossless") == 50
    assert counter(metrics, "frames_skipped", "lossless") == 0


def test_lossless_reader_waiting_for_room_stops_promptly(
    h264_clip: ClipMaker, make_reader: Callable[..., tuple[CameraReader, Recorder]]
) -> None:
    """A consumer that never takes a frame must not keep a lossless reader from stopping."""
    clip = h264_clip.clip(seconds=2)
    reader, recorder = make_reader(
        camera_id="blocked", url=str(clip), detect_fps=25.0, realtime=False,
        room=lambda timeout: time.sleep(timeout) is not None,
    )  # fmt: skip
    recorder.wait_for_state(CameraState.STREAMING)
    time.sleep(0.3)
    assert recorder.frames == []  # the first frame waits for room that never comes
    started = time.monotonic()
    reader.stop()
    assert reader.join(timeout=2.0)
    # It re-checks for a stop between short waits for room: well under a second unless the
    # machine is loaded; a reader deaf to the stop would not be joined at all.
    stop_s = time.monotonic() - started
    logging.getLogger(__name__).info("lossless reader stopped in %.2f s", stop_s)
    assert stop_s < 1.0 * load_slack(cap=1.9, what="lossless reader stop"), stop_s


def test_reader_nice_lowers_the_reader_thread_priority_only(
    h264_clip: ClipMaker, make_reader: Callable[..., tuple[CameraReader, Recorder]]
) -> None:
    clip = h264_clip.clip(seconds=2)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    _, recorder = make_reader(camera_id="nice", url=str(clip), nice=7, loop=True)
    _, plain_recorder = make_reader(camera_id="plain", url=str(clip), loop=True)
    recorder.wait_for_frames(1)
    plain_recorder.wait_for_frames(1)
    threads = {thread.name: thread.native_id for thread in threading.enumerate()}
    nice_id = threads[f"{READER_THREAD_PREFIX}nice"]
    plain_id = threads[f"{READER_THREAD_PREFIX}plain"]
    assert nice_id is not None and plain_id is not None
    assert os.getpriority(os.PRIO_PROCESS, nice_id) == min(base + 7, 19)
    assert os.getpriority(os.PRIO_PROCESS, plain_id) == base
    # The rest of the process (the event loop, inference) keeps its priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (0.0, list(range(0, 50, 5))),
        # Grid points at 0.1 + k x 0.2 s: the first frame at or after each (frames every 0.04 s).
        (0.5, [0, *range(3, 50, 5)]),
    ],
)
def test_detect_phase_shifts_which_frames_are_due(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    phase: float,
    expected: list[int],
) -> None:
    clip = h264_clip.clip(seconds=2)  # 50 frames at 25 fps
    reference = []
    capture = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    while True:
        ok, image = capture.read()
        if not ok:
            break
        reference.append(cv2.resize(image, INPUT_SIZE, interpolation=cv2.INTER_LINEAR))
    capture.release()
    assert len(reference) == 50

    reader, recorder = make_reader(
        camera_id=f"phase{phase}", url=str(clip), realtime=False, detect_phase=phase
    )
    assert reader.join(timeout=WAIT_S)
    indices = [
        next(i for i, ref in enumerate(reference) if np.array_equal(ref, frame.image))
        for frame in recorder.frames
    ]
    assert indices == expected


@BOTH_DECODERS
def test_looped_file_continues_without_counting_a_fault(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    clip = h264_clip.clip(seconds=1)
    reader, recorder = make_reader(camera_id="loop", url=str(clip), detect_fps=10.0, loop=True)

    recorder.wait_for_frames(25)  # two and a half passes through a one-second clip
    assert [f.seq for f in recorder.frames[:25]] == list(range(25))
    assert reader.status.state is CameraState.STREAMING
    assert reader.status.reconnects == 0
    assert counter(metrics, "camera_reconnects", "loop") == 0
    assert CameraState.RECONNECTING not in recorder.states()


@BOTH_DECODERS
def test_truncated_file_delivers_what_it_has_then_ends(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    clip = h264_clip.truncated(clip=h264_clip.clip(seconds=4), keep_fraction=0.5)
    reader, recorder = make_reader(
        camera_id="truncated", url=str(clip), detect_fps=25.0, realtime=False
    )

    assert reader.join(timeout=WAIT_S)
    assert 10 <= len(recorder.frames) < 100
    assert reader.status.state is CameraState.STOPPED


@BOTH_DECODERS
def test_corrupted_file_keeps_decoding_past_the_damage(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    clip = h264_clip.corrupted(clip=h264_clip.clip(seconds=4))
    reader, recorder = make_reader(
        camera_id="corrupt", url=str(clip), detect_fps=25.0, realtime=False
    )

    assert reader.join(timeout=WAIT_S)
    assert len(recorder.frames) >= 80  # damage costs a few frames, not the rest of the file
    assert all(f.image.shape == (*INPUT_SIZE[::-1], 3) for f in recorder.frames)
    assert reader.status.state is CameraState.STOPPED


@BOTH_DECODERS
def test_resolution_change_inside_a_stream_keeps_the_stream_going(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    decoder: Decoder,
) -> None:
    # OpenCV 5.0's FFmpeg backend keeps delivering the size it probed at open and rescales
    # later frames to it (measured), so inside one session the change is invisible; the new
    # size arrives with the next open (see the RTSP restart test). PyAV hands on each frame
    # as decoded, so the new size shows at once. What must hold for both: the new SPS
    # neither breaks nor ends the stream, and frames stay well-formed.
    clip = h264_clip.resolution_change(seconds_each=1)
    reader, recorder = make_reader(
        camera_id="reschange", url=str(clip), detect_fps=25.0, realtime=False
    )

    assert reader.join(timeout=WAIT_S)
    assert len(recorder.frames) >= 45  # both one-second halves at 25 fps
    sizes = {(1280, 720)} if decoder is Decoder.OPENCV else {(1280, 720), (640, 480)}
    assert {(f.width, f.height) for f in recorder.frames} == sizes
    assert all(f.image.shape == (*INPUT_SIZE[::-1], 3) for f in recorder.frames)
    assert reader.status.state is CameraState.STOPPED
    assert reader.status.reconnects == 0


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe nobody writes to: `open()` for reading blocks until a writer comes (a file
    camera on a hung mount blocks the same way). Torn down before the readers are joined:
    a reader still blocked in its open is released (a writer comes and goes, EOF) and the
    path removed so no retry blocks again."""
    path = tmp_path / "camera.mp4"
    os.mkfifo(path)
    yield path
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # only succeeds with a reader
    except OSError:
        writer = None
    path.unlink()
    if writer is not None:
        os.close(writer)


@BOTH_DECODERS
def test_fifo_camera_fails_within_its_open_timeout_and_never_holds_up_a_healthy_camera(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    fifo: Path,
    metrics: Metrics,
) -> None:
    """Before: the FIFO camera's open blocked for good (no error, no retry, open_timeout_s
    ignored) and, with OpenCV, held the lock every capture opens under, so the healthy camera
    never started."""
    clip = h264_clip.clip(seconds=2)
    open_s = 1.0
    started = time.monotonic()
    blocked, blocked_recorder = make_reader(
        camera_id="fifo", url=str(fifo), loop=True,
        timeouts=dataclasses.replace(TIMEOUTS, open_s=open_s),
    )  # fmt: skip
    time.sleep(0.3)  # the FIFO camera is first in line to open
    _, healthy_recorder = make_reader(camera_id="healthy", url=str(clip), loop=True)

    healthy_recorder.wait_for_frames(3, timeout=10.0)
    fifo_slack = load_slack(cap=3.0, what="FIFO open timeout")
    blocked_recorder.wait_for(
        lambda: blocked.status.last_error is not None, what="the FIFO camera's error",
        timeout=max(0.1, open_s + 2.0 * fifo_slack - (time.monotonic() - started)),
    )  # fmt: skip
    logging.getLogger(__name__).info("FIFO open failed after %.2f s", time.monotonic() - started)
    error = blocked.status.last_error or ""
    assert error == f"cannot open {fifo}: not a regular file (a FIFO)", error
    blocked_recorder.wait_for(lambda: blocked.status.reconnects >= 2, what="two retries")
    assert blocked.status.state is CameraState.RECONNECTING
    assert blocked_recorder.frames == []
    assert counter(metrics, "camera_reconnects", "healthy") == 0


_TURN_FILTERS = {90: "transpose=clock", 180: "hflip,vflip", 270: "transpose=cclock"}
"""The filter that stores an upright clip turned so that a display rotation of the key's
degrees shows it upright again (ffmpeg 5.1 writes `rotate=90` as a display matrix turning
the frame 90 degrees counterclockwise: checked against ffmpeg's own autorotation)."""


@pytest.fixture(scope="module")
def rotated_clip(
    h264_clip: ClipMaker, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], tuple[Path, Path]]:
    """`rotated_clip(degrees)`: an upright 640x480 clip and a copy stored turned, tagged to be
    shown upright (made once per module for both decoders)."""
    directory = tmp_path_factory.mktemp("rotated")
    made: dict[int, tuple[Path, Path]] = {}

    def make(degrees: int) -> tuple[Path, Path]:
        if degrees in made:
            return made[degrees]
        upright = h264_clip.clip(seconds=1, width=640, height=480)
        stored = directory / f"stored-{degrees}.mp4"
        run_ffmpeg(
            "-i", str(upright), "-vf", _TURN_FILTERS[degrees], "-c:v", "libx264", "-preset",
            "veryfast", "-pix_fmt", "yuv420p", "-b:v", "3M", output=stored,
        )  # fmt: skip
        tagged = directory / f"tagged-{degrees}.mp4"
        # Debian 12's ffmpeg 5.1 writes the `rotate` tag as the display matrix
        # (-display_rotation needs ffmpeg 7).
        run_ffmpeg(
            "-i", str(stored), "-c", "copy", "-metadata:s:v", f"rotate={degrees}", output=tagged
        )  # fmt: skip
        made[degrees] = (upright, tagged)
        return made[degrees]

    return make


def _mean_abs_difference(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@BOTH_DECODERS
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_file_stored_rotated_is_handed_on_upright_at_its_display_size(
    rotated_clip: Callable[[int], tuple[Path, Path]],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    degrees: int,
) -> None:
    """Before: the pyav decoder ignored the display matrix and handed on phone clips sideways
    (480x640), while OpenCV turned them upright."""
    upright, tagged = rotated_clip(degrees)
    with av.open(str(tagged)) as container:  # the clip is stored turned and tagged
        frame = next(container.decode(video=0))
        stored_size = (frame.width, frame.height)
        assert frame.rotation != 0
    assert stored_size == ((640, 480) if degrees == 180 else (480, 640))
    capture = cv2.VideoCapture(str(upright), cv2.CAP_FFMPEG)
    grabbed, image = capture.read()
    capture.release()
    assert grabbed
    reference = cv2.resize(image, INPUT_SIZE, interpolation=cv2.INTER_LINEAR)

    reader, recorder = make_reader(camera_id="phone", url=str(tagged), realtime=False)
    assert reader.join(timeout=WAIT_S)

    first = recorder.frames[0]
    assert (first.width, first.height) == (640, 480)
    assert first.image.shape == (*INPUT_SIZE[::-1], 3)
    upright_difference = _mean_abs_difference(first.image, reference)
    # Any other orientation of the same frame is far off: the comparison can tell them apart.
    turned = [
        cv2.resize(np.ascontiguousarray(np.rot90(first.image, k)), INPUT_SIZE) for k in (1, 2, 3)
    ]
    wrong_difference = min(_mean_abs_difference(image, reference) for image in turned)
    assert upright_difference < 6.0, (upright_difference, wrong_difference)
    assert wrong_difference > 3 * upright_difference, (upright_difference, wrong_difference)


def _full_decode(clip: Path) -> tuple[list[NDArray[np.uint8]], list[bool]]:
    """Every frame of `clip` decoded by PyAV as the reader converts it, and which are keyframes."""
    images: list[NDArray[np.uint8]] = []
    keyframes: list[bool] = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(
                width=INPUT_SIZE[0], height=INPUT_SIZE[1], format="bgr24", interpolation="BILINEAR"
            )
            images.append(image)
            keyframes.append(frame.key_frame)
    return images, keyframes


def test_pyav_keyframes_only_hands_on_exactly_the_keyframes_each_as_it_arrives(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    """The test clips have B-frames, so the decoder reorders and would hold each keyframe
    back until later keyframes arrive; keyframes are at most 2 s apart (GOP 50 at 25 fps,
    with x264's scene cuts between)."""
    # Continuous footage (not `repeated`): frames are matched by their pixels. 640x480
    # encodes and decodes in a fraction of 720p's time, and has the same B-frames.
    clip = h264_clip.clip(seconds=12, width=640, height=480)  # 300 frames
    with av.open(str(clip)) as container:
        assert container.streams.video[0].codec_context.has_b_frames
    images, keyframes = _full_decode(clip)
    expected = [image for image, key in zip(images, keyframes, strict=True) if key]
    assert 4 <= len(expected) <= 30  # a small subset: the test means something
    server = rtsp_server(mounts={"cam": clip})
    started = time.monotonic()

    reader, recorder = make_reader(
        camera_id="keys", url=server.url("cam"), detect_fps=25.0,
        timeouts=dataclasses.replace(TIMEOUTS, stall_s=3.0),
        decode=DecodeOptions(decoder=Decoder.PYAV, keyframes_only=True),
    )  # fmt: skip
    recorder.wait_for_frames(4, timeout=12.0)
    reader.stop()
    assert reader.join(timeout=5.0)

    assert CameraState.RECONNECTING not in recorder.states()
    # The stream starts with a keyframe when the reader connects: it is handed on at once,
    # not when the next keyframes push it out of the decoder (>= 2 s later). The bars widen
    # with the machine's load, capped below that.
    slow = load_slack(cap=1.3, what="keyframes as they arrive")
    first_s = recorder.frame_arrivals[0] - started
    gaps = [b - a for a, b in itertools.pairwise(recorder.frame_arrivals[:4])]
    logging.getLogger(__name__).info("first keyframe %.2f s, gaps %s", first_s, gaps)
    assert first_s < 1.5 * slow, (first_s, slow)
    assert max(gaps) < 2.5 * slow, (gaps, slow)
    # A keyframe decodes on its own: each frame handed on has the very pixels of one of the
    # clip's keyframes in a full decode, in order; every frame decoded was handed on.
    matched = [
        next((i for i, image in enumerate(expected) if np.array_equal(frame.image, image)), None)
        for frame in recorder.frames
    ]
    assert None not in matched, matched
    assert matched == sorted(set(matched)), matched
    assert counter(metrics, "frames_captured", "keys") == len(recorder.frames)


def test_pyav_skip_loop_filter_gives_close_but_not_identical_frames(
    h264_clip: ClipMaker,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
) -> None:
    clip = h264_clip.clip(seconds=2)
    images, _ = _full_decode(clip)

    reader, recorder = make_reader(
        camera_id="nolf", url=str(clip), detect_fps=25.0, realtime=False,
        decode=DecodeOptions(decoder=Decoder.PYAV, skip_loop_filter=True),
    )  # fmt: skip

    assert reader.join(timeout=WAIT_S)
    assert len(recorder.frames) == len(images) == 50
    differing = 0
    for frame, image in zip(recorder.frames, images, strict=True):
        error = np.mean((frame.image.astype(np.float64) - image.astype(np.float64)) ** 2)
        differing += error > 0
        assert error == 0 or 10 * np.log10(255**2 / error) > 30.0  # PSNR in dB
    assert differing >= 40  # deblocking was skipped, not just asked for


def test_pyav_keyframes_only_with_a_stall_timeout_below_the_keyframe_interval_reconnects(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
) -> None:
    """Packets that keep coming without a frame are a stall too: with a keyframe every 2 s
    and a 1 s stall timeout the reader reconnects instead of waiting inside one grab."""
    server = rtsp_server(mounts={"cam": h264_clip.repeated(seconds=12)})
    reader, recorder = make_reader(
        camera_id="gop", url=server.url("cam"),
        timeouts=dataclasses.replace(TIMEOUTS, read_s=1.0, stall_s=1.0),
        decode=DecodeOptions(decoder=Decoder.PYAV, keyframes_only=True),
    )  # fmt: skip

    recorder.wait_for_frames(1)  # the first keyframe came and was decoded ...
    recorder.wait_for_state(CameraState.RECONNECTING)  # ... the next one came too late
    error = reader.status.last_error or ""
    # Normally the grab gives up at the stall timeout, naming the cause. On a loaded machine
    # the grab can instead return the next keyframe just after it: a stall, said as such.
    if not error.startswith("stalled: no frame from "):
        assert "read failed" in error, error
        assert "stall_timeout_s above the keyframe interval" in error


@BOTH_DECODERS
def test_rtsp_camera_reconnects_to_a_reconfigured_server_while_another_never_pauses(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    clip_720p = h264_clip.repeated(seconds=12)
    clip_480p = h264_clip.repeated(seconds=12, width=640, height=480, source=HIKERS_VIDEO)
    flaky = rtsp_server(mounts={"cam": clip_720p})
    steady = rtsp_server(mounts={"cam": clip_480p})
    flaky_reader, flaky_frames = make_reader(camera_id="flaky", url=flaky.url("cam"))
    _, steady_frames = make_reader(camera_id="steady", url=steady.url("cam"))
    flaky_frames.wait_for_frames(5)
    steady_frames.wait_for_frames(5)
    assert (flaky_frames.frames[0].width, flaky_frames.frames[0].height) == (1280, 720)
    assert gauge(metrics, "camera_up", "flaky") == 1

    outage_start = time.monotonic()
    flaky.kill()
    flaky_frames.wait_for(
        lambda: flaky_reader.status.reconnects >= 2, what="two reconnect attempts"
    )
    assert flaky_reader.status.state is CameraState.RECONNECTING
    assert gauge(metrics, "camera_up", "flaky") == 0
    errors = [s.last_error or "" for s in flaky_frames.statuses]
    assert "read failed" in next(e for e in errors if e), errors  # the kill, then open failures
    assert "cannot open" in errors[-1]

    frames_before = len(flaky_frames.frames)
    restarted_at = time.monotonic()
    flaky.mounts["cam"] = clip_480p  # the camera comes back reconfigured to 640x480
    flaky.start()  # same port
    flaky_frames.wait_for_frames(frames_before + 5)
    reconnect_s = flaky_frames.frame_arrivals[frames_before] - restarted_at
    outage_end = time.monotonic()
    recovered = flaky_reader.status
    assert recovered.state is CameraState.STREAMING
    assert (recovered.frame_width, recovered.frame_height) == (640, 480)
    assert {(f.width, f.height) for f in flaky_frames.frames[frames_before:]} == {(640, 480)}
    assert all(f.image.shape == (*INPUT_SIZE[::-1], 3) for f in flaky_frames.frames)
    assert counter(metrics, "camera_reconnects", "flaky") == flaky_reader.status.reconnects
    seqs = [f.seq for f in flaky_frames.frames]
    assert seqs == list(range(len(seqs)))  # seq continues across the reconnect
    logging.getLogger(__name__).info("RTSP reconnect after restart: %.2f s", reconnect_s)

    during_outage = [t for t in steady_frames.frame_arrivals if outage_start <= t <= outage_end]
    gaps = [b - a for a, b in itertools.pairwise(during_outage)]
    assert len(during_outage) >= 5
    # 5 fps means 0.2 s between frames; a camera blocked by its neighbour's (re)open would
    # wait out its 2 s timeouts. 1 s on a machine that is not overloaded, capped below 2 s.
    bar = 1.0 * load_slack(cap=1.8, what="steady camera beside a reconnecting one")
    logging.getLogger(__name__).info("steady camera: largest gap %.2f s", max(gaps))
    assert max(gaps) < bar, (gaps, bar)
    assert CameraState.RECONNECTING not in steady_frames.states()


class _BusyDetector:
    """Burns CPU for every frame it takes, in a thread of its own, as inference does; a frame
    arriving while it is busy is dropped (the latest-frame slot's rule)."""

    def __init__(self, *, burn_s: float) -> None:
        self._burn_s = burn_s
        self._work = threading.Event()
        self._stop = threading.Event()
        self.frames = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def take(self, _frame: Frame) -> None:
        self._work.set()

    def _run(self) -> None:
        block = os.urandom(1 << 20)
        while not self._stop.is_set():
            if not self._work.wait(0.1):
                continue
            self._work.clear()
            self.frames += 1
            deadline = time.thread_time() + self._burn_s
            while time.thread_time() < deadline:
                hashlib.sha256(block).digest()  # releases the GIL, like OpenVINO does

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5.0)


@dataclasses.dataclass(frozen=True)
class StarvedRun:
    """One window of a live reader starved of CPU: frames read, lag behind the stream at the
    end (from the stream's own timestamps), stale frames, ages of the frames handed on."""

    captured: float
    seconds: float
    lag_s: float
    stale: float
    ages: list[float]


def _run_starved_reader(
    *, url: str, metrics: Metrics, camera_id: str, max_lag_s: float, decoder: Decoder
) -> StarvedRun:
    recorder = Recorder()
    detector = _BusyDetector(burn_s=0.1)

    def on_frame(frame: Frame) -> None:
        recorder.put(frame)
        detector.take(frame)

    # The reader (at the lowest priority) and the detector share one core: every frame the
    # reader hands on takes CPU from its decoding, as inference does on a busy host.
    main_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(main_affinity)})
    try:
        reader = CameraReader(
            settings=ReaderSettings(
                camera_id=camera_id, url=url, detect_fps=25.0, input_size=INPUT_SIZE,
                nice=19, max_lag_s=max_lag_s, decode=DecodeOptions(decoder=decoder),
            ),
            sink=CallbackSink(put=on_frame), on_status=recorder.on_status, metrics=metrics,
        )  # fmt: skip
        detector.thread.start()
        reader.start()
    finally:
        os.sched_setaffinity(0, main_affinity)
    try:
        recorder.wait_for_frames(1)
        started = time.monotonic()
        captured_before = counter(metrics, "frames_captured", camera_id)
        time.sleep(5.0)
        captured = counter(metrics, "frames_captured", camera_id) - captured_before
        seconds = time.monotonic() - started
        lag_s = gauge(metrics, "camera_lag_seconds", camera_id)
    finally:
        reader.stop()
        assert reader.join(timeout=5.0)
        detector.stop()
    ages = [arrived - f.capture_monotonic for f, arrived in
            zip(recorder.frames, recorder.frame_arrivals, strict=True)]  # fmt: skip
    run = StarvedRun(captured=captured, seconds=seconds, lag_s=lag_s,
                     stale=counter(metrics, "frames_stale", camera_id), ages=ages)  # fmt: skip
    logging.getLogger(__name__).info(
        "max_lag_s %s: %.1f frames/s read, lag %.2f s, %d stale, %d handed",
        max_lag_s, captured / seconds, lag_s, run.stale, len(ages),
    )  # fmt: skip
    return run


@pytest.mark.alone  # a reader starved on purpose: another test's load starves both runs
@BOTH_DECODERS
def test_reader_behind_its_live_stream_skips_detection_until_it_catches_up(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    decoder: Decoder,
) -> None:
    server = rtsp_server(mounts={"cam": h264_clip.repeated(seconds=30)})
    url = server.url("cam")
    # The control first: detecting every due frame starves the decoder, which falls behind.
    control = _run_starved_reader(
        url=url, metrics=metrics, camera_id="all", max_lag_s=3600.0, decoder=decoder
    )
    caplog.clear()
    skipping = _run_starved_reader(
        url=url, metrics=metrics, camera_id="skip", max_lag_s=0.3, decoder=decoder
    )
    assert control.captured < 0.6 * 25 * control.seconds, control.captured / control.seconds
    assert control.lag_s > 1.0, control.lag_s
    assert control.stale == 0
    # Skipping the due frames it read too late is what keeps the same starved reader at the
    # live edge, whatever the stream could deliver meanwhile: its lag, from the stream's own
    # timestamps, stays at max_lag_s while the control's grows. Measured seconds apart under
    # the same load (a rate of 25 frames/s does not hold when other test runs share the
    # core or starve the RTSP server) ...
    assert skipping.lag_s < control.lag_s / 2, (skipping.lag_s, control.lag_s)
    slack = load_slack(cap=4.0, what="reader behind its live stream")
    assert skipping.lag_s <= 0.3 + 0.2 * slack, (skipping.lag_s, slack)
    # ... by not detecting those frames, which it counted and reported.
    assert skipping.stale > 0
    assert "behind the live stream" in caplog.text
    # A handed frame is timed from when it reached the host, so its age includes the lag.
    assert max(skipping.ages) <= 0.3 + 0.1 * slack, max(skipping.ages)


STALL_MARGIN_S = 3.0
"""Slack on top of a read or stall timeout for a reader to notice and report the fault
(measured: well under a second on an idle machine). Widened with the load, capped so that a
frozen stream is still reported before its 8 s read timeout could end the grab."""


def stall_margin() -> float:
    return STALL_MARGIN_S * load_slack(cap=1.8, what="stall noticed")


@BOTH_DECODERS
def test_stalled_rtsp_stream_is_detected_within_its_read_timeout_and_recovered(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
) -> None:
    server = rtsp_server(mounts={"cam": h264_clip.repeated(seconds=12)})
    timeouts = dataclasses.replace(TIMEOUTS, read_s=1.0, stall_s=1.0)
    reader, recorder = make_reader(camera_id="stall", url=server.url("cam"), timeouts=timeouts)
    recorder.wait_for_frames(3)

    paused_at = time.monotonic()
    server.pause()  # sockets stay open, nothing is sent
    try:
        # Bounded: a reader that noticed only through some later, longer timeout (FFmpeg's
        # own, or the server closing the session) would not make it.
        recorder.wait_for_state(CameraState.RECONNECTING, timeout=timeouts.read_s + stall_margin())
        detected_s = time.monotonic() - paused_at
    finally:
        server.resume()
    logging.getLogger(__name__).info("stall detected %.2f s after the pause", detected_s)
    error = reader.status.last_error or ""
    # Silence is seen as the read timing out, or (OpenCV draining its buffer after one) as a
    # frame that came too late; either names the stream.
    assert error.startswith(("read failed on rtsp://", "stalled: no frame from rtsp://")), error
    frames_before = len(recorder.frames)
    recorder.wait_for_frames(frames_before + 3)
    recovered = reader.status
    assert recovered.state is CameraState.STREAMING


@BOTH_DECODERS
def test_frame_arriving_later_than_the_stall_timeout_is_a_stall(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
) -> None:
    """A grab that succeeds, but only after the stall timeout (a camera that freezes for a
    while, inside the read timeout), is a stall: the reader reconnects and says so."""
    server = rtsp_server(mounts={"cam": h264_clip.repeated(seconds=12)})
    timeouts = dataclasses.replace(TIMEOUTS, read_s=8.0, stall_s=1.0)
    reader, recorder = make_reader(camera_id="freeze", url=server.url("cam"), timeouts=timeouts)
    recorder.wait_for_frames(3)

    frozen_s = 2.5  # above the stall timeout, well inside the read timeout
    server.pause()
    try:
        time.sleep(frozen_s)
    finally:
        server.resume()
    resumed_at = time.monotonic()
    recorder.wait_for_state(CameraState.RECONNECTING, timeout=stall_margin())
    logging.getLogger(__name__).info(
        "stall reported %.2f s after the stream resumed", time.monotonic() - resumed_at
    )
    error = reader.status.last_error or ""
    assert error.startswith(f"stalled: no frame from {server.url('cam')} for "), error
    waited_s = float(error.rsplit(" for ", 1)[1].removesuffix(" s"))
    assert timeouts.stall_s < waited_s < timeouts.read_s, error
    frames_before = len(recorder.frames)
    recorder.wait_for_frames(frames_before + 3)
    assert reader.status.state is CameraState.STREAMING
    assert reader.status.reconnects == 1


def test_unanswering_camera_backs_off_and_never_leaks_its_password(
    blackhole_port: int,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{blackhole_port}/stream1"
    policy = SeededReconnect(initial_s=0.2, max_s=0.5, seed=7)
    reader, recorder = make_reader(
        camera_id="blackhole", url=url, timeouts=dataclasses.replace(TIMEOUTS, open_s=0.5),
        reconnect=policy,
    )  # fmt: skip

    recorder.wait_for(lambda: reader.status.reconnects >= 3, what="three reconnects")
    status = reader.status
    assert status.state is CameraState.RECONNECTING
    assert status.last_error is not None
    assert "cannot open" in status.last_error
    assert f"127.0.0.1:{blackhole_port}/stream1" in status.last_error
    assert "\n" not in status.last_error
    assert counter(metrics, "camera_reconnects", "blackhole") >= 3
    assert gauge(metrics, "camera_up", "blackhole") == 0

    reader.stop()
    assert reader.join(timeout=3.0)
    # It backs off: attempt after attempt, each waiting the policy's next full-jitter delay
    # (the same seeded draws: ceilings 0.2, 0.4, then capped at 0.5 s).
    logged = logged_reconnects(caplog, "blackhole")
    expected = policy.backoff()
    assert [attempt for attempt, _ in logged] == list(range(1, len(logged) + 1)), logged
    assert [delay for _, delay in logged] == [expected.next_delay() for _ in logged], logged
    seen = [repr(s) for s in recorder.statuses] + [r.getMessage() for r in caplog.records]
    assert any("***" in text for text in seen)  # the URL was reported, redacted
    assert not [text for text in seen if SECRET in text]
    native_output = capfd.readouterr()  # OpenCV and FFmpeg write to fd 1/2 directly
    assert SECRET not in native_output.out + native_output.err


@BOTH_DECODERS
def test_refused_stream_names_the_reason_and_never_leaks_the_password(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    decoder: Decoder,
) -> None:
    """The server answers, but not for this path: FFmpeg's error names the URL it was given
    (password included); what the reader reports must not."""
    caplog.set_level(logging.DEBUG)
    server = rtsp_server(mounts={"cam": h264_clip.clip(seconds=2)})
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{server.port}/no-such-stream"
    reader, recorder = make_reader(camera_id="refused", url=url)

    recorder.wait_for(lambda: reader.status.reconnects >= 1, what="a reconnect")
    reader.stop()
    assert reader.join(timeout=5.0)
    error = reader.status.last_error or ""
    assert error.startswith("cannot open rtsp://***:***@127.0.0.1:"), error
    if decoder is Decoder.PYAV:
        assert "404 Not Found" in error  # FFmpeg's reason, without the URL it appends
    seen = [repr(s) for s in recorder.statuses] + [r.getMessage() for r in caplog.records]
    assert not [text for text in seen if SECRET in text]
    native_output = capfd.readouterr()
    assert SECRET not in native_output.out + native_output.err


def test_backoff_starts_again_after_the_stream_was_stable(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After streaming for `STABLE_STREAMING_S` since its reconnect, a camera's next fault is
    retried at the first, shortest delay again, not at the grown one."""
    caplog.set_level(logging.DEBUG, logger="edge_facedet.sources")
    monkeypatch.setattr(sessions, "STABLE_STREAMING_S", 1.0)  # 10 s in production
    server = rtsp_server(mounts={"cam": h264_clip.repeated(seconds=12)})
    policy = SeededReconnect(initial_s=0.2, max_s=1.0)
    reader, recorder = make_reader(camera_id="comeback", url=server.url("cam"), reconnect=policy)
    recorder.wait_for_frames(3)

    server.kill()
    recorder.wait_for(lambda: reader.status.reconnects >= 2, what="two reconnects")
    server.start()  # same port
    frames_before = len(recorder.frames)
    recorder.wait_for_frames(frames_before + 10)  # 2 s at 5 fps: stable for over 1 s
    first_outage = logged_reconnects(caplog, "comeback")
    assert [attempt for attempt, _ in first_outage][:2] == [1, 2], first_outage

    reconnects_before = reader.status.reconnects
    server.kill()
    recorder.wait_for(
        lambda: reader.status.reconnects > reconnects_before, what="a reconnect after the kill"
    )
    second_outage = logged_reconnects(caplog, "comeback")[len(first_outage) :]
    assert second_outage, "no reconnect announced after the second kill"
    assert second_outage[0][0] == 1, (first_outage, second_outage)


@pytest.mark.parametrize(
    ("source", "decoder"),
    [
        ("closed-port", Decoder.OPENCV),
        ("not-a-video", Decoder.OPENCV),
        ("not-a-video", Decoder.PYAV),
    ],
)
def test_gives_up_after_max_reconnect_attempts(
    source: str,
    tmp_path: Path,
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
    metrics: Metrics,
) -> None:
    if source == "closed-port":
        url = f"rtsp://127.0.0.1:{closed_port()}/cam"
    else:
        garbage = tmp_path / "camera.mp4"
        garbage.write_bytes(b"this is not a video\n" * 1000)
        url = str(garbage)
    reader, recorder = make_reader(
        camera_id="doomed", url=url,
        reconnect=GiveUpAfter(initial_s=0.05, max_s=0.1, max_attempts=3),
    )  # fmt: skip

    assert reader.join(timeout=WAIT_S)
    assert reader.status.state is CameraState.FAILED
    assert reader.status.reconnects == 3
    assert counter(metrics, "camera_reconnects", "doomed") == 3
    assert recorder.states() == [CameraState.STARTING, CameraState.RECONNECTING, CameraState.FAILED]
    assert recorder.frames == []


def test_stop_during_reconnect_backoff_is_prompt(
    make_reader: Callable[..., tuple[CameraReader, Recorder]],
) -> None:
    # A seeded draw from [0, 30 s] that is known to be a long sleep to interrupt.
    policy = SeededReconnect(initial_s=30.0, max_s=30.0, seed=0)
    assert policy.backoff().next_delay() > 5.0
    reader, recorder = make_reader(
        camera_id="backoff", url=f"rtsp://127.0.0.1:{closed_port()}/cam", reconnect=policy
    )
    recorder.wait_for_state(CameraState.RECONNECTING)

    reader.stop()
    # The stop wakes the backoff's wait at once; the bar stays far below the 5 s sleep.
    assert reader.join(timeout=1.0 * load_slack(cap=4.0, what="stop during backoff"))
    assert reader.status.state is CameraState.STOPPED
    assert recorder.states()[-1] is CameraState.STOPPED
