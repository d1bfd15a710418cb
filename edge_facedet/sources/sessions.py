"""Capture sessions: reading one opened source, with the rules of its kind of source.

A session opens its camera's source and reads it, frame by frame, until a fault (raised as
`CameraFaultError`), the end of the source or a stop. Every kind grabs (demuxes and decodes)
each frame, puts it on a frame clock and lets the `FrameDispatcher` hand on the due ones;
the kinds differ in the rest:

- `LiveSession` (network streams): probes the server before opening (see
  edge_facedet.sources.probe), runs on the arrival clock, measures its lag behind a stream
  that carries the sender's clock, and treats any failed read as a fault.
- `FileSession`: checks the path before opening, bounded by the open timeout (see
  edge_facedet.sources.filecheck: a FIFO or a hung mount must not block the decoder's open);
  runs on the file's media clock, paced in real time or read as fast as the sink takes
  frames (edge_facedet.sources.pacer); skips damaged packets, and at the end of the file
  stops the reader or, looping, rewinds (else reopens).
- `DeviceSession` (V4L2): opened through OpenCV's V4L2 backend, on the arrival clock.

One session object serves its reader for the reader's whole lifetime (one `read` per
opened source), so what carries over a reconnect (the media clock, frame numbers, the
detect grid) lives in it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, ClassVar

from edge_facedet.redact import redact_text
from edge_facedet.sources.decoders import SourceError, open_source
from edge_facedet.sources.dispatch import FrameDispatcher
from edge_facedet.sources.faults import CameraFaultError
from edge_facedet.sources.filecheck import FileCheck, FileCheckError, file_path
from edge_facedet.sources.lag import StreamLag
from edge_facedet.sources.pacer import FilePacer
from edge_facedet.sources.probe import ProbeError, probe
from edge_facedet.sources.status import CameraState, RateWindow
from edge_facedet.sources.urls import SourceKind, has_live_clock

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_facedet.backoff import Backoff
    from edge_facedet.frames import Frame
    from edge_facedet.sources.dispatch import FrameSink
    from edge_facedet.sources.settings import ReaderSettings
    from edge_facedet.sources.source import VideoSource
    from edge_facedet.sources.status import ReaderMetrics, StatusBoard

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0
"""How often a streaming reader reports its frame rates."""
STABLE_STREAMING_S = 10.0
"""Streaming this long without a fault resets the reconnect backoff: a camera that connects and
fails at once keeps backing off instead of hammering its server."""
FILE_READ_FAILURES_AT_END = 16
"""Consecutive failed grabs that end a file; fewer are damaged packets, skipped (each failed
grab at the real end of a file returns at once, so the margin is cheap)."""


class SessionEnd(enum.Enum):
    """How a session ended, other than by a fault."""

    STOPPED = "stopped"
    """The reader was asked to stop."""
    FINISHED = "finished"
    """The source has no more frames (a file that does not loop): the reader stops."""
    REOPEN = "reopen"
    """Open the source again at once, no fault (a looping file that could not rewind)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderContext:
    """What a session shares with its reader."""

    settings: ReaderSettings
    safe_url: str
    """The URL with its credentials redacted, for messages."""
    secrets: tuple[str, ...]
    """Strings to redact from the decoder's messages."""
    stop: threading.Event
    board: StatusBoard
    metrics: ReaderMetrics
    backoff: Backoff
    sink: FrameSink
    deliver: Callable[[Frame], None]
    """Hands a frame to the sink, the sink's failures contained."""


class Session:
    """Reads a camera's opened sources; subclasses add the rules of their kind."""

    is_device: ClassVar[bool] = False

    def __init__(self, *, context: ReaderContext) -> None:
        self._ctx = context
        self._settings = context.settings
        self._dispatcher = FrameDispatcher(
            settings=context.settings,
            safe_url=context.safe_url,
            sink=context.sink,
            deliver=context.deliver,
            board=context.board,
            metrics=context.metrics,
            stop=context.stop,
            lossless=self._lossless(),
        )
        self._window = RateWindow(now=time.monotonic())

    def open(self) -> VideoSource:
        """Open the source; a `CameraFaultError` naming the redacted URL if it cannot be."""
        started = time.monotonic()
        self._before_open()
        timeouts = self._settings.timeouts
        try:
            return open_source(
                url=self._settings.url,
                is_device=self.is_device,
                options=self._settings.decode,
                open_timeout_s=timeouts.open_s,
                read_timeout_s=timeouts.read_s,
                stall_timeout_s=timeouts.stall_s,
            )
        except SourceError as exc:
            waited = time.monotonic() - started
            reason = redact_text(str(exc), *self._ctx.secrets)
            raise CameraFaultError(
                f"cannot open {self._ctx.safe_url} ({reason}; gave up after {waited:.1f} s)"
            ) from None

    def read(self, source: VideoSource) -> SessionEnd:
        """Read an opened source until a fault (raised), its end or a stop."""
        ctx = self._ctx
        self._begin(source)
        frames = 0
        started = last_status = time.monotonic()
        while not ctx.stop.is_set():
            wait_s = self._wait_before_grab()
            if wait_s > 0 and ctx.stop.wait(wait_s):
                return SessionEnd.STOPPED
            arrived = self._grab(source, first=frames == 0)
            if arrived is None:
                continue  # a damaged spot in a file skipped, or a looping file rewound
            capture_time = datetime.now(timezone.utc)
            frames += 1
            ctx.metrics.captured.inc()
            self._window.grabbed += 1
            clock_s = self._frame_clock(arrived=arrived)
            if frames == 1:
                ctx.metrics.up.set(1)
                ctx.board.set_state(CameraState.STREAMING)
                self._window.restart(now=arrived, grabbed=1)
                last_status = arrived
            elif ctx.backoff.attempt and arrived - started > STABLE_STREAMING_S:
                ctx.backoff.reset()
            if self._dispatcher.is_due(clock_s):
                # Measured on due frames only: the lag decides nothing for the others.
                lag_s = self._lag_s(source, arrived=arrived)
                if self._dispatcher.dispatch_due(
                    source=source, capture_time=capture_time, arrived=arrived, lag_s=lag_s
                ):
                    self._window.handed += 1
            if arrived - last_status >= STATUS_INTERVAL_S:
                last_status = arrived
                fps_in, fps_out = self._window.take_rates(now=arrived)
                ctx.board.set_state(CameraState.STREAMING, fps_in=fps_in, fps_out=fps_out)
        return SessionEnd.STOPPED

    def _grab(self, source: VideoSource, *, first: bool) -> float | None:
        """Grab the next frame (demux and decode, no colour conversion); its arrival time, or
        None when the frame was skipped."""
        started = time.monotonic()
        grabbed = source.grab()
        arrived = time.monotonic()
        if not grabbed:
            return self._grab_failed(waited_s=arrived - started, first=first)
        self._grab_succeeded()
        if arrived - started > self._settings.timeouts.stall_s:
            # After a read timeout OpenCV drains the decoder's buffered frames, each such grab
            # succeeding only after another read timeout: a slow success is a stall too.
            raise CameraFaultError(
                f"stalled: no frame from {self._ctx.safe_url} for {arrived - started:.1f} s"
            )
        return arrived

    # -- the kind's rules: a live source's by default ----------------------------------------

    def _lossless(self) -> bool:
        """Whether every due frame waits for room in the sink (else the sink may refuse it)."""
        return False

    def _before_open(self) -> None:
        """Anything to check before the decoder opens the source."""

    def _begin(self, source: VideoSource) -> None:
        """Start reading an opened source."""

    def _wait_before_grab(self) -> float:
        """Seconds to wait before the next grab."""
        return 0.0

    def _grab_failed(self, *, waited_s: float, first: bool) -> float | None:
        """A grab returned no frame: raise, or None to go on with the next grab."""
        del first
        raise CameraFaultError(
            f"read failed on {self._ctx.safe_url} after {waited_s:.1f} s "
            f"(stream ended, broke or timed out{self._read_failure_hint()})"
        )

    def _read_failure_hint(self) -> str:
        return ""

    def _grab_succeeded(self) -> None:
        """A grab returned a frame."""

    def _frame_clock(self, *, arrived: float) -> float:
        """The grabbed frame's time on the clock the detect grid runs on."""
        return arrived

    def _lag_s(self, source: VideoSource, *, arrived: float) -> float:
        """How far behind its source the frame was read; 0 when that cannot be told."""
        del source, arrived
        return 0.0


class LiveSession(Session):
    """A network stream: probed before opening, lag measured when it carries a live clock."""

    def __init__(self, *, context: ReaderContext) -> None:
        super().__init__(context=context)
        self._lag = StreamLag() if has_live_clock(context.settings.url) else None

    def _before_open(self) -> None:
        try:
            probe(self._settings.url, timeout_s=self._settings.timeouts.open_s)
        except ProbeError as exc:
            raise CameraFaultError(f"cannot open {self._ctx.safe_url} ({exc})") from None

    def _begin(self, source: VideoSource) -> None:
        if self._lag is not None:
            self._lag.reset()  # a new session's timestamps start anew
            self._ctx.metrics.lag.set(0)

    def _read_failure_hint(self) -> str:
        if self._settings.decode.keyframes_only:
            return "; keyframes_only needs stall_timeout_s above the keyframe interval"
        return ""

    def _lag_s(self, source: VideoSource, *, arrived: float) -> float:
        if self._lag is None:
            return 0.0
        lag_s = self._lag.update(arrival_s=arrived, stream_s=source.stream_time_s())
        self._ctx.metrics.lag.set(lag_s)
        return lag_s


class DeviceSession(Session):
    """A V4L2 device, opened through OpenCV's V4L2 backend (FFmpeg's timeouts do not apply)."""

    is_device = True


class _EndOfFileError(Exception):
    """A file camera reached the end of its readable frames."""


class FileSession(Session):
    """A file: paced on its media clock, damaged packets skipped, ended or looped at its end."""

    def __init__(self, *, context: ReaderContext) -> None:
        self._pacer = FilePacer(realtime=context.settings.realtime)
        self._read_failures = 0
        self._frames_since_rewind = 0
        self._check = FileCheck(
            path=file_path(context.settings.url),
            name=f"cam-{context.settings.camera_id}-check",
        )
        super().__init__(context=context)

    def _before_open(self) -> None:
        try:
            self._check.run(timeout_s=self._settings.timeouts.open_s)
        except FileCheckError as exc:
            reason = redact_text(str(exc), *self._ctx.secrets)
            raise CameraFaultError(f"cannot open {self._ctx.safe_url}: {reason}") from None

    def read(self, source: VideoSource) -> SessionEnd:
        try:
            return super().read(source)
        except _EndOfFileError:
            if self._settings.loop:
                return SessionEnd.REOPEN  # looping is normal operation, not a fault
            log.info("camera %s: end of file %s", self._settings.camera_id, self._ctx.safe_url)
            return SessionEnd.FINISHED

    def _lossless(self) -> bool:
        return not self._settings.realtime

    def _begin(self, source: VideoSource) -> None:
        self._pacer.start(declared_fps=source.fps(), now=time.monotonic())
        self._frames_since_rewind = 0

    def _wait_before_grab(self) -> float:
        return self._pacer.wait_s(now=time.monotonic())

    def _grab(self, source: VideoSource, *, first: bool) -> float | None:
        """As for any source, except that a looping file at its end is rewound (None)."""
        try:
            arrived = super()._grab(source, first=first)
        except _EndOfFileError:
            # Rewinding keeps a looping file away from OpenCV's process-wide open lock (see
            # edge_facedet.sources.probe), where a reopen would wait behind other cameras'
            # opens. Only after frames were read since the last rewind, so an unreadable file
            # cannot spin here; otherwise (or if the seek fails) the file is reopened.
            if not (self._settings.loop and self._frames_since_rewind):
                raise
            self._read_failures = 0
            if not source.rewind():
                raise
            self._frames_since_rewind = 0
            return None
        if arrived is not None:
            self._frames_since_rewind += 1
        return arrived

    def _grab_failed(self, *, waited_s: float, first: bool) -> float | None:
        # OpenCV's grab() fails on a packet the decoder rejects, and the next grab() carries
        # on after it; only a run of failures means the file has ended.
        del waited_s
        self._read_failures += 1
        if self._read_failures < FILE_READ_FAILURES_AT_END:
            return None
        if first:
            raise CameraFaultError(f"no readable frame in {self._ctx.safe_url}")
        raise _EndOfFileError

    def _grab_succeeded(self) -> None:
        self._read_failures = 0

    def _frame_clock(self, *, arrived: float) -> float:
        del arrived
        return self._pacer.next_frame()


SESSIONS: dict[SourceKind, type[Session]] = {
    SourceKind.NETWORK: LiveSession,
    SourceKind.FILE: FileSession,
    SourceKind.DEVICE: DeviceSession,
}
"""The session class for each kind of source."""


def session_for(context: ReaderContext) -> Session:
    """The session for the kind of source the reader's URL names."""
    return SESSIONS[context.settings.kind](context=context)
