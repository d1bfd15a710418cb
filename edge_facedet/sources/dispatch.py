"""What becomes of each frame a reader grabs: skipped, skipped as stale, gated, or handed on.

A grabbed frame is demuxed and decoded, not yet converted: only the frames that are due (the
detect grid), still fresh (a live stream's lag) and, with motion gating, let through by the
camera's `MotionGate` are converted to the network input and handed to the consumer, the
camera's `FrameSink`.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from edge_facedet.frames import Frame
from edge_facedet.sources.activity import CameraActivity
from edge_facedet.sources.faults import CameraFaultError
from edge_facedet.sources.gate import MotionGate, Verdict
from edge_facedet.sources.grid import DetectGrid
from edge_facedet.sources.source import SourceError
from edge_facedet.sources.status import CameraState

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from datetime import datetime

    from edge_facedet.sources.settings import ReaderSettings
    from edge_facedet.sources.source import VideoSource
    from edge_facedet.sources.status import ReaderMetrics, StatusBoard

log = logging.getLogger(__name__)

BEHIND_WARNING_INTERVAL_S = 60.0
"""At most one warning this often while a reader keeps falling behind its stream."""
_ROOM_POLL_S = 0.25
"""How often a lossless reader waiting for room checks whether it was asked to stop."""


class FrameSink(Protocol):
    """Where a reader hands its frames (the scheduler's `LatestFrameSlot` is one)."""

    def put(self, frame: Frame) -> None:
        """Take a frame; called from the reader's thread."""
        ...

    def claim(self) -> bool:
        """Whether a frame handed on now would be taken; False skips its conversion (and the
        sink has counted the frame as dropped)."""
        ...

    def wait_until_empty(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until the sink can take a frame without dropping
        one; True once it can. Used by lossless readers instead of `claim`."""
        ...


class FrameDispatcher:
    """Dispatches one camera's grabbed frames; lasts the reader's lifetime, so frame numbers
    and the detect grid run on across reconnects."""

    def __init__(
        self,
        *,
        settings: ReaderSettings,
        safe_url: str,
        sink: FrameSink,
        deliver: Callable[[Frame], None],
        board: StatusBoard,
        metrics: ReaderMetrics,
        stop: threading.Event,
        lossless: bool,
    ) -> None:
        """`deliver` hands a frame to the sink (`sink.put`, its failures contained).

        A `lossless` reader (a file read faster than real time) is read no faster than the
        sink takes its frames: each due frame waits until the sink has room, none is dropped.
        Any other asks the sink to `claim` a due frame before converting it.
        """
        self._camera_id = settings.camera_id
        self._input_size = settings.input_size
        self._max_lag_s = settings.max_lag_s
        self._keep_picture = settings.keep_picture
        self._safe_url = safe_url
        self._sink = sink
        self._deliver = deliver
        self._board = board
        self._metrics = metrics
        self._stop = stop
        self._lossless = lossless
        self._grid = DetectGrid(detect_fps=settings.detect_fps, phase=settings.detect_phase)
        self._gate = (
            None
            if settings.gate is None
            else MotionGate(
                settings=settings.gate,
                activity=settings.activity or CameraActivity(),
                detect_fps=settings.detect_fps,
            )
        )
        self._due_clock_s = 0.0
        self._seq = 0
        self._stale_unreported = 0
        self._behind_warned_at = -math.inf

    def is_due(self, clock_s: float) -> bool:
        """Whether the frame at `clock_s` on the frame clock is due; counted as skipped if not."""
        if self._grid.is_due(clock_s):
            self._due_clock_s = clock_s  # the gate's recheck interval runs on this clock
            return True
        self._metrics.skipped.inc()
        return False

    def dispatch_due(
        self, *, source: VideoSource, capture_time: datetime, arrived: float, lag_s: float
    ) -> bool:
        """Skip a due frame as stale, gate it, leave it to a sink without room, or hand it on
        (True).

        `lag_s` is how far behind its live stream the frame was read (0 without a live clock).
        The gate comes before the sink's `claim`: a frame that would not be sent is counted
        as gated, not as dropped.
        """
        if lag_s > self._max_lag_s:
            self._skip_stale(lag_s=lag_s, now=arrived)
            return False
        verdict = self._judge(source)
        if verdict is Verdict.GATED:
            self._metrics.gated.inc()
            return False
        if not (self._lossless or self._sink.claim()):
            return False
        # Timed from when the frame reached the host, not when this reader got to it, so a
        # reader behind its stream shows in every latency and capture_ts.
        self._hand_on(
            source=source,
            capture_time=capture_time - timedelta(seconds=lag_s),
            monotonic=arrived - lag_s,
            recheck=verdict is Verdict.RECHECK,
        )
        if self._gate is not None:
            self._gate.sent(clock_s=self._due_clock_s)
        return True

    def _judge(self, source: VideoSource) -> Verdict:
        """The motion gate's verdict on the due frame (MOTION without a gate: always sent)."""
        if self._gate is None:
            return Verdict.MOTION
        try:
            return self._gate.decide(source=source, clock_s=self._due_clock_s)
        except SourceError:
            raise CameraFaultError(f"could not decode a frame from {self._safe_url}") from None

    def _skip_stale(self, *, lag_s: float, now: float) -> None:
        """Decode but do not detect a due frame read too late: the CPU that detecting it would
        take lets the reader catch up, where detecting would let it fall further behind."""
        self._metrics.stale.inc()
        self._stale_unreported += 1
        if now - self._behind_warned_at >= BEHIND_WARNING_INTERVAL_S:
            self._behind_warned_at = now
            log.warning(
                "camera %s: reading %.1f s behind the live stream (max_lag_s %.1f); due frames "
                "not detected since the last warning: %d. The host decodes slower than its "
                "cameras send: fewer cameras, a lower detect_fps or a detect_url substream helps",
                self._camera_id,
                lag_s,
                self._max_lag_s,
                self._stale_unreported,
            )
            self._stale_unreported = 0

    def _hand_on(
        self, *, source: VideoSource, capture_time: datetime, monotonic: float, recheck: bool
    ) -> None:
        try:
            resized, width, height = source.retrieve(size=self._input_size)
            # Only cameras with snapshots on keep the full-size picture alive with the frame.
            picture = source.picture() if self._keep_picture else None
        except SourceError:
            raise CameraFaultError(f"could not decode a frame from {self._safe_url}") from None
        frame = Frame(
            camera_id=self._camera_id,
            seq=self._seq,
            capture_time=capture_time,
            capture_monotonic=monotonic,
            width=width,
            height=height,
            image=resized,
            picture=picture,
            recheck=recheck,
        )
        self._seq += 1
        status = self._board.current
        if (width, height) != (status.frame_width, status.frame_height):
            log.info("camera %s: frame size %dx%d", self._camera_id, width, height)
            self._board.set_state(CameraState.STREAMING, frame_width=width, frame_height=height)
        if self._lossless:
            # Prepared before waiting, so the frame is ready the moment the sink has room.
            while not self._sink.wait_until_empty(_ROOM_POLL_S):
                if self._stop.is_set():
                    return
        self._deliver(frame)
