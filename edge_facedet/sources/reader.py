"""Camera readers: one thread per camera that opens, reads, rate-limits and reconnects a source.

A `CameraReader` owns everything between a camera URL and the `Frame` it hands on: opening the
source (a `VideoSource` of edge_facedet.sources.decoders: OpenCV or PyAV), holding the
camera's `detect_fps` by retrieving (colour-converting) and resizing only the frames that are
due, to the network input, noticing faults (open failure, read failure, end of stream,
stall) and reconnecting with capped full-jitter backoff. It reports its state through
`on_status` and the `camera_*` / `frames_*` metrics. Nothing ever raises out of the thread.

Known limits of "a blocking read cannot hang the thread":

- FFmpeg sources are bounded by `CAP_PROP_READ_TIMEOUT_MSEC`: OpenCV's interrupt callback
  aborts a read that waits longer. After such an abort OpenCV drains frames still buffered in
  the decoder, each drained `grab()` again waiting the read timeout: a grab slower than
  `stall_timeout_s` counts as a stall, so with stall <= read timeout a stall is seen after one
  read timeout (else after up to about three), and stop() answers within about one. PyAV
  sources are bounded by FFmpeg's socket timeouts (`timeout`, `rw_timeout`) at
  `read_timeout_s`, after the probe (below) has bounded the connect by `open_timeout_s`.
- `grab()` already demuxes and decodes (H.264 frames reference each other, so every frame must
  be decoded, except with the PyAV source's `keyframes_only`); skipping `retrieve()` saves the
  colour conversion only (measured on 720p: grab ~3.5 ms of CPU, retrieve + resize ~1.4 ms).
- V4L2 devices ignore OpenCV's timeout properties; a stalled device blocks each read for
  `OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT` seconds (OpenCV's default: 10), read once per process.
- Anything that blocks inside native code without a timeout (a driver bug, a hung NFS mount
  under a file camera) blocks this thread; the thread is a daemon so it cannot block interpreter
  exit, and `join()` reports it with False. Python cannot kill a thread, and releasing the
  capture from another thread while it is in use would be a use-after-free.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit

import cv2

from edge_facedet.backoff import Backoff
from edge_facedet.frames import Frame
from edge_facedet.redact import redact_text, redact_url
from edge_facedet.sources.decoders import DecodeOptions, SourceError, VideoSource, open_source
from edge_facedet.sources.lag import StreamLag
from edge_facedet.sources.urls import SourceKind, default_port, has_live_clock, source_kind

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_facedet.outputs.metrics import Metrics

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

STATUS_INTERVAL_S = 1.0
"""How often a streaming reader reports its frame rates."""
STABLE_STREAMING_S = 10.0
"""Streaming this long without a fault resets the reconnect backoff: a camera that connects and
fails at once keeps backing off instead of hammering its server."""
_FALLBACK_FILE_FPS = 25.0
"""Pace for files whose container declares no usable frame rate."""
_MAX_PACING_LAG_S = 1.0
"""A realtime file camera that fell further behind than this restarts its pacing clock rather
than reading the backlog as fast as possible."""
_BEHIND_WARNING_INTERVAL_S = 60.0
"""At most one warning this often while a reader keeps falling behind its stream."""
_FILE_READ_FAILURES_AT_END = 16
"""Consecutive failed grabs that end a file; fewer are damaged packets, skipped (each failed
grab at the real end of a file returns at once, so the margin is cheap)."""
"""Ports FFmpeg uses when a network URL names none."""
_ROOM_POLL_S = 0.25
"""How often a lossless reader waiting for room checks whether it was asked to stop."""
READER_THREAD_PREFIX = "cam-"
"""Each reader's native thread is named this plus its camera id (`top -H`, /proc)."""
_DEFAULT_DECODE = DecodeOptions()
_DUE_EPSILON_S = 1e-6
"""Absorbs float rounding when the media clock sums frame intervals (5 x 0.04 < 0.2)."""


class CameraState(str, enum.Enum):
    """Where a reader is in its lifetime (`enum.StrEnum` needs 3.11; we support 3.10)."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A snapshot of one reader, for health answers, MQTT availability and logs."""

    camera_id: str
    state: CameraState
    fps_in: float
    """Frames grabbed per second over the last status interval."""
    fps_out: float
    """Frames decoded and handed on per second over the last status interval."""
    last_error: str | None
    """The most recent fault, one line, credentials redacted."""
    reconnects: int
    frame_width: int | None
    frame_height: int | None


class _CameraFaultError(Exception):
    """A camera fault with a one-line message already redacted, ending one capture session."""


class _EndOfFileError(Exception):
    """A file camera reached the end of its readable frames."""


class CameraReader:
    """Reads one camera in a thread of its own and hands every due frame to `on_frame`."""

    def __init__(
        self,
        *,
        camera_id: str,
        url: str,
        detect_fps: float,
        input_size: tuple[int, int],
        on_frame: Callable[[Frame], None],
        on_status: Callable[[CameraStatus], None],
        metrics: Metrics,
        loop_file: bool = False,
        realtime: bool = True,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        stall_timeout_s: float = 10.0,
        reconnect_initial_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        max_reconnect_attempts: int | None = None,
        decode: DecodeOptions = _DEFAULT_DECODE,
        nice: int = 0,
        detect_phase: float = 0.0,
        max_lag_s: float = 0.5,
        claim: Callable[[], bool] | None = None,
        wait_until_empty: Callable[[float], bool] | None = None,
    ) -> None:
        _check_arguments(
            camera_id=camera_id,
            detect_fps=detect_fps,
            detect_phase=detect_phase,
            max_lag_s=max_lag_s,
            input_size=input_size,
        )
        self._camera_id = camera_id
        self._url = url
        self._safe_url = redact_url(url)
        self._secrets = _url_secrets(url=url)
        self._kind = source_kind(url)
        if decode.keyframes_only and self._kind is not SourceKind.NETWORK:
            # A file's media clock counts frames; skipping all but keyframes would race it.
            raise ValueError(f"camera {camera_id}: keyframes_only applies to network streams")
        self._detect_period_s = 1.0 / detect_fps
        self._phase_s = detect_phase * self._detect_period_s
        self._input_size = input_size
        self._on_frame = on_frame
        self._on_status = on_status
        self._metrics = metrics
        self._loop_file = loop_file
        self._realtime = realtime
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._max_reconnect_attempts = max_reconnect_attempts
        self._decode = decode
        self._nice = nice
        self._max_lag_s = max_lag_s
        self._lag = StreamLag() if has_live_clock(url) else None
        # Asked before converting a due frame; False means the consumer cannot take it yet
        # (and has counted it), so the BGR conversion and resize are skipped.
        self._claim = claim
        # A file read faster than real time is read no faster than the consumer takes its
        # frames: each due frame waits until the consumer has room, none is dropped.
        self._wait_until_empty = (
            wait_until_empty if self._kind is SourceKind.FILE and not realtime else None
        )
        self._backoff = Backoff(base=reconnect_initial_s, cap=reconnect_max_s)

        self._stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera_id}", daemon=True)
        self._status_lock = threading.Lock()
        self._status = CameraStatus(
            camera_id=camera_id,
            state=CameraState.STARTING,
            fps_in=0.0,
            fps_out=0.0,
            last_error=None,
            reconnects=0,
            frame_width=None,
            frame_height=None,
        )
        self._callback_errors = 0

        # Reader-thread state, touched only by the thread.
        self._seq = 0
        self._file_read_failures = 0
        self._frames_since_rewind = 0
        self._media_clock_s = 0.0
        self._next_due_s = -math.inf  # the first frame is due
        self._stale_unreported = 0
        self._behind_warned_at = -math.inf
        self._window_start = time.monotonic()
        self._window_grabbed = 0
        self._window_handed = 0

        self._captured = metrics.frames_captured.labels(camera=camera_id)
        self._skipped = metrics.frames_skipped.labels(camera=camera_id)
        self._stale = metrics.frames_stale.labels(camera=camera_id)
        self._lag_gauge = metrics.camera_lag_seconds.labels(camera=camera_id)
        self._reconnect_counter = metrics.camera_reconnects.labels(camera=camera_id)
        self._up = metrics.camera_up.labels(camera=camera_id)
        self._up.set(0)

    # -- public API ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; returns at once. Use `join` to wait for it."""
        self._stop_requested.set()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the thread; True once it has ended (or never ran)."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def status(self) -> CameraStatus:
        with self._status_lock:
            return self._status

    # -- thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        _name_native_thread(f"{READER_THREAD_PREFIX}{self._camera_id}")
        if self._nice:
            self._lower_priority()
        try:
            self._run_sessions()
        except Exception as exc:  # noqa: BLE001 - the thread must end in a known state
            _log.error("camera %s: reader crashed: %s", self._camera_id, self._describe(exc=exc))
            self._set_state(CameraState.FAILED, last_error=self._describe(exc=exc))
        finally:
            self._up.set(0)
        if self._stop_requested.is_set():
            self._set_state(CameraState.STOPPED)

    def _lower_priority(self) -> None:
        # Linux applies PRIO_PROCESS to the one thread whose id is given; FFmpeg's decoder
        # threads, started later from this thread, inherit its niceness.
        try:
            thread_id = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, thread_id)
            os.setpriority(os.PRIO_PROCESS, thread_id, min(current + self._nice, 19))
        except OSError as exc:
            _log.warning("camera %s: cannot lower the reader's priority: %s", self._camera_id, exc)

    def _run_sessions(self) -> None:
        self._set_state(CameraState.STARTING)
        while not self._stop_requested.is_set():
            try:
                self._session()
            except _EndOfFileError:
                if not self._loop_file:
                    _log.info("camera %s: end of file %s", self._camera_id, self._safe_url)
                    self._up.set(0)
                    self._set_state(CameraState.STOPPED)
                    return
                # Looping a file is normal operation, not a fault: reopen at once.
                continue
            except _CameraFaultError as fault:
                error = str(fault)
            except Exception as exc:  # noqa: BLE001 - a bug in one session must not end the camera
                error = f"unexpected {self._describe(exc=exc)}"
            else:
                return  # stop requested inside the session
            self._up.set(0)
            if self._stop_requested.is_set():
                return
            if not self._wait_before_reconnect(error=error):
                return

    def _wait_before_reconnect(self, *, error: str) -> bool:
        """Back off after a fault; False when the reader should end (stopped or failed)."""
        attempts = self._max_reconnect_attempts
        if attempts is not None and self._backoff.attempt >= attempts:
            _log.error(
                "camera %s: giving up after %d reconnect attempts: %s",
                self._camera_id,
                self._backoff.attempt,
                error,
            )
            self._set_state(CameraState.FAILED, last_error=error)
            return False
        attempt = self._backoff.attempt
        delay = self._backoff.next_delay()
        # A camera that is down for days retries every reconnect_max_s; log the first
        # attempts and then only powers of two, so one dead camera cannot flood the journal.
        level = logging.WARNING if attempt & (attempt - 1) == 0 else logging.DEBUG
        _log.log(
            level,
            "camera %s: %s; reconnect attempt %d in %.1f s",
            self._camera_id,
            error,
            attempt + 1,
            delay,
        )
        self._set_state(CameraState.RECONNECTING, last_error=error)
        if self._stop_requested.wait(delay):
            return False
        self._reconnect_counter.inc()
        with self._status_lock:
            reconnects = self._status.reconnects + 1
        self._set_state(CameraState.RECONNECTING, reconnects=reconnects)
        return True

    def _session(self) -> None:
        """One capture from open to fault (raised), end of file (raised) or stop (returns)."""
        source = self._open()
        try:
            self._read_loop(source=source)
        finally:
            source.release()

    def _open(self) -> VideoSource:
        started = time.monotonic()
        if self._kind is SourceKind.NETWORK:
            self._probe()
        try:
            return open_source(
                url=self._url,
                is_device=self._kind is SourceKind.DEVICE,
                options=self._decode,
                open_timeout_s=self._open_timeout_s,
                read_timeout_s=self._read_timeout_s,
                stall_timeout_s=self._stall_timeout_s,
            )
        except SourceError as exc:
            waited = time.monotonic() - started
            reason = redact_text(str(exc), *self._secrets)
            raise _CameraFaultError(
                f"cannot open {self._safe_url} ({reason}; gave up after {waited:.1f} s)"
            ) from None

    def _probe(self) -> None:
        """Check that a network camera answers before handing its URL to the decoder.

        OpenCV's FFmpeg backend opens every capture of the process under one global lock, so
        an open that waits out its timeout (a camera that accepts TCP but never answers, an
        unreachable host, a frozen server) holds up the opens of all other cameras, looping
        files included, for that long: one dead camera paused every reconnecting camera. The
        probe waits here instead, outside that lock: a TCP connect, and for RTSP an OPTIONS
        request whose reply (any status, 401 included) shows the server is alive.
        """
        parts = urlsplit(self._url)
        scheme = parts.scheme.lower()
        if scheme == "udp":
            return  # connectionless: nothing to probe
        port = default_port(self._url)  # None for a malformed port: OpenCV reports it
        host = parts.hostname
        if host is None or port is None:
            return
        started = time.monotonic()
        deadline = started + self._open_timeout_s
        try:
            with socket.create_connection((host, port), timeout=self._open_timeout_s) as sock:
                if scheme != "rtsp":
                    return  # http(s), rtsps, rtmp: the TCP connect is the probe
                netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                request = (
                    f"OPTIONS rtsp://{netloc}{parts.path or '/'} RTSP/1.0\r\n"
                    "CSeq: 1\r\nUser-Agent: edge-facedet\r\n\r\n"
                )
                sock.sendall(request.encode())
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                reply = sock.recv(16)
        except OSError as exc:
            waited = time.monotonic() - started
            reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or "error")
            raise _CameraFaultError(
                f"cannot open {self._safe_url} ({reason}; gave up after {waited:.1f} s)"
            ) from None
        if not reply.startswith(b"RTSP/"):
            raise _CameraFaultError(
                f"cannot open {self._safe_url} (not an RTSP server: no RTSP reply to OPTIONS)"
            )

    def _grab_or_rewind(self, *, source: VideoSource, first: bool) -> float | None:
        """`_grab`, except that a looping file at its end is rewound (None) if it can be."""
        try:
            arrived = self._grab(source=source, first=first)
        except _EndOfFileError:
            # Rewinding keeps a looping file away from OpenCV's process-wide open lock (see
            # _probe), where a reopen would wait behind other cameras' opens. Only after
            # frames were read since the last rewind, so an unreadable file cannot spin
            # here; otherwise (or if the seek fails) the file is reopened as before.
            if not (self._loop_file and self._frames_since_rewind):
                raise
            self._file_read_failures = 0
            if not source.rewind():
                raise
            self._frames_since_rewind = 0
            return None
        if arrived is not None:
            self._frames_since_rewind += 1
        return arrived

    def _read_loop(self, *, source: VideoSource) -> None:
        is_file = self._kind is SourceKind.FILE
        file_frame_interval_s = 1.0 / _file_fps(source=source) if is_file else 0.0
        # Files run on their own media clock (frame count / fps), continuous across loops;
        # live sources on the monotonic clock at the moment each frame arrives.
        pacing_origin = time.monotonic() - self._media_clock_s
        session_frames = 0
        self._frames_since_rewind = 0
        session_start = time.monotonic()
        last_status = session_start
        if self._lag is not None:
            self._lag.reset()
            self._lag_gauge.set(0)

        while not self._stop_requested.is_set():
            if is_file and self._realtime:
                lag = time.monotonic() - (pacing_origin + self._media_clock_s)
                if lag > _MAX_PACING_LAG_S:
                    pacing_origin += lag
                elif lag < 0 and self._stop_requested.wait(-lag):
                    return

            arrived = self._grab_or_rewind(source=source, first=session_frames == 0)
            if arrived is None:
                continue  # a damaged spot in a file skipped, or a looping file rewound
            capture_time = datetime.now(timezone.utc)
            session_frames += 1
            self._captured.inc()
            self._window_grabbed += 1
            if is_file:
                clock_s = self._media_clock_s
                self._media_clock_s += file_frame_interval_s
            else:
                clock_s = arrived

            if session_frames == 1:
                self._up.set(1)
                self._set_state(CameraState.STREAMING)
                self._window_start, self._window_grabbed, self._window_handed = arrived, 1, 0
                last_status = arrived
            elif self._backoff.attempt and arrived - session_start > STABLE_STREAMING_S:
                self._backoff.reset()

            self._dispatch(
                source=source, capture_time=capture_time, arrived=arrived, clock_s=clock_s
            )

            if arrived - last_status >= STATUS_INTERVAL_S:
                last_status = arrived
                self._report_rates(now=arrived)

    def _grab(self, *, source: VideoSource, first: bool) -> float | None:
        """Grab the next frame (demux and decode, no colour conversion); its arrival time, or
        None when a file's damaged packet was skipped."""
        started = time.monotonic()
        grabbed = source.grab()
        arrived = time.monotonic()
        if not grabbed:
            if self._kind is not SourceKind.FILE:
                hint = (
                    "; keyframes_only needs stall_timeout_s above the keyframe interval"
                    if self._decode.keyframes_only
                    else ""
                )
                raise _CameraFaultError(
                    f"read failed on {self._safe_url} after {arrived - started:.1f} s "
                    f"(stream ended, broke or timed out{hint})"
                )
            # OpenCV's grab() fails on a packet the decoder rejects, and the next grab()
            # carries on after it; only a run of failures means the file has ended.
            self._file_read_failures += 1
            if self._file_read_failures < _FILE_READ_FAILURES_AT_END:
                return None
            if first:
                raise _CameraFaultError(f"no readable frame in {self._safe_url}")
            raise _EndOfFileError
        self._file_read_failures = 0
        if arrived - started > self._stall_timeout_s:
            # After a read timeout OpenCV drains the decoder's buffered frames, each such grab
            # succeeding only after another read timeout: a slow success is a stall too.
            raise _CameraFaultError(
                f"stalled: no frame from {self._safe_url} for {arrived - started:.1f} s"
            )
        return arrived

    def _dispatch(
        self, *, source: VideoSource, capture_time: datetime, arrived: float, clock_s: float
    ) -> None:
        """Skip the grabbed frame, skip it as stale, or hand it on."""
        if not self._is_due(clock_s=clock_s):
            self._skipped.inc()
            return
        # Measured on due frames only: the lag decides nothing for the others.
        lag_s = self._measure_lag(source=source, arrived=arrived)
        if lag_s > self._max_lag_s:
            self._skip_stale(lag_s=lag_s, now=arrived)
        elif self._wait_until_empty is not None or self._claim is None or self._claim():
            # Timed from when the frame reached the host, not when this reader got to it, so
            # a reader behind its stream shows in every latency and capture_ts.
            self._hand_on(
                source=source,
                capture_time=capture_time - timedelta(seconds=lag_s),
                monotonic=arrived - lag_s,
            )

    def _measure_lag(self, *, source: VideoSource, arrived: float) -> float:
        if self._lag is None:
            return 0.0
        stream_s = source.stream_time_s()
        lag_s = self._lag.update(arrival_s=arrived, stream_s=stream_s)
        self._lag_gauge.set(lag_s)
        return lag_s

    def _skip_stale(self, *, lag_s: float, now: float) -> None:
        """Decode but do not detect a due frame read too late: the CPU that detecting it would
        take lets the reader catch up, where detecting would let it fall further behind."""
        self._stale.inc()
        self._stale_unreported += 1
        if now - self._behind_warned_at >= _BEHIND_WARNING_INTERVAL_S:
            self._behind_warned_at = now
            _log.warning(
                "camera %s: reading %.1f s behind the live stream (max_lag_s %.1f); due frames "
                "not detected since the last warning: %d. The host decodes slower than its "
                "cameras send: fewer cameras, a lower detect_fps or a detect_url substream helps",
                self._camera_id,
                lag_s,
                self._max_lag_s,
                self._stale_unreported,
            )
            self._stale_unreported = 0

    def _is_due(self, *, clock_s: float) -> bool:
        """Whether the frame at `clock_s` is the first at or after a point of the detect grid.

        The grid is `phase + k x period` on the frame clock: the average rate is exact
        whatever the arrival jitter, a gap (reconnect, loop, slow consumer) resumes on the
        next point instead of bursting, and cameras given different phases spread their due
        frames over the period instead of all presenting one at the same moment.
        """
        if clock_s + _DUE_EPSILON_S < self._next_due_s:
            return False
        period = self._detect_period_s
        points_passed = math.floor((clock_s - self._phase_s) / period + _DUE_EPSILON_S)
        self._next_due_s = self._phase_s + (points_passed + 1) * period
        return True

    def _hand_on(self, *, source: VideoSource, capture_time: datetime, monotonic: float) -> None:
        try:
            resized, width, height = source.retrieve(size=self._input_size)
        except SourceError:
            raise _CameraFaultError(f"could not decode a frame from {self._safe_url}") from None
        frame = Frame(
            camera_id=self._camera_id,
            seq=self._seq,
            capture_time=capture_time,
            capture_monotonic=monotonic,
            width=width,
            height=height,
            image=resized,
        )
        self._seq += 1
        self._window_handed += 1
        with self._status_lock:
            size_changed = (width, height) != (
                self._status.frame_width,
                self._status.frame_height,
            )
        if size_changed:
            _log.info("camera %s: frame size %dx%d", self._camera_id, width, height)
            self._set_state(CameraState.STREAMING, frame_width=width, frame_height=height)
        if self._wait_until_empty is not None:
            # Prepared before waiting, so the frame is ready the moment the slot empties.
            while not self._wait_until_empty(_ROOM_POLL_S):
                if self._stop_requested.is_set():
                    return
        self._call_back(self._on_frame, frame)

    def _report_rates(self, *, now: float) -> None:
        elapsed = max(now - self._window_start, 1e-9)
        fps_in = self._window_grabbed / elapsed
        fps_out = self._window_handed / elapsed
        self._window_start = now
        self._window_grabbed = 0
        self._window_handed = 0
        self._set_state(CameraState.STREAMING, fps_in=fps_in, fps_out=fps_out)

    # -- helpers ---------------------------------------------------------------------------

    def _set_state(
        self,
        state: CameraState,
        *,
        last_error: str | None = None,
        reconnects: int | None = None,
        fps_in: float | None = None,
        fps_out: float | None = None,
        frame_width: int | None = None,
        frame_height: int | None = None,
    ) -> None:
        """Update the snapshot and report it (every call is a change or a rate report)."""
        streaming = state is CameraState.STREAMING
        with self._status_lock:
            old = self._status
            self._status = CameraStatus(
                camera_id=self._camera_id,
                state=state,
                fps_in=(fps_in if fps_in is not None else old.fps_in) if streaming else 0.0,
                fps_out=(fps_out if fps_out is not None else old.fps_out) if streaming else 0.0,
                last_error=last_error if last_error is not None else old.last_error,
                reconnects=reconnects if reconnects is not None else old.reconnects,
                frame_width=frame_width if frame_width is not None else old.frame_width,
                frame_height=frame_height if frame_height is not None else old.frame_height,
            )
            status = self._status
        self._call_back(self._on_status, status)

    def _call_back(self, callback: Callable[[_T], None], argument: _T) -> None:
        """Run a consumer callback; its bugs are logged, never allowed to end the camera."""
        try:
            callback(argument)
        except Exception as exc:  # noqa: BLE001 - the consumer's bug must not stop reading
            self._callback_errors += 1
            # Powers of two: the first failures are visible, a persistent bug does not flood.
            if self._callback_errors & (self._callback_errors - 1) == 0:
                _log.error(
                    "camera %s: %s failed (%d times so far): %s",
                    self._camera_id,
                    getattr(callback, "__name__", "callback"),
                    self._callback_errors,
                    self._describe(exc=exc),
                )

    def _describe(self, *, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return " ".join(redact_text(text, *self._secrets).split())


def _check_arguments(
    *,
    camera_id: str,
    detect_fps: float,
    detect_phase: float,
    max_lag_s: float,
    input_size: tuple[int, int],
) -> None:
    if detect_fps <= 0:
        raise ValueError(f"camera {camera_id}: detect_fps must be > 0, got {detect_fps}")
    if not 0.0 <= detect_phase < 1.0:
        raise ValueError(f"camera {camera_id}: detect_phase must be in [0, 1), got {detect_phase}")
    if max_lag_s <= 0:
        raise ValueError(f"camera {camera_id}: max_lag_s must be > 0, got {max_lag_s}")
    if input_size[0] <= 0 or input_size[1] <= 0:
        raise ValueError(f"camera {camera_id}: input_size must be positive, got {input_size}")


def keep_opencv_in_reader_threads() -> None:
    """Make OpenCV's resize run in the calling reader thread, without its worker pool.

    Each reader already runs in its own thread, and with many cameras every core is busy;
    OpenCV's pool (one worker per core, spinning before it sleeps) only adds threads that
    compete with the readers and the detector. Measured at 10 RTSP cameras: the readers'
    CPU fell from 101.9 to 99.0 ms per camera-second. Process-wide, so the service calls it once.
    """
    cv2.setNumThreads(1)


def _name_native_thread(name: str) -> None:
    """Show `name` for this thread in `top -H`, `ps -L` and /proc (Linux keeps 15 bytes).

    Python names its threads for itself only; an operator asking which thread burns a core
    sees the process name on every thread. Best effort: other systems have no such file.
    """
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as comm:  # noqa: PTH123
        comm.write(name.encode("utf-8")[:15].decode("utf-8", "ignore"))


def _url_secrets(*, url: str) -> tuple[str, ...]:
    """The password as written and percent-decoded, since FFmpeg may echo either form."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple({password, unquote(password)})


def _file_fps(*, source: VideoSource) -> float:
    fps = source.fps()
    if not math.isfinite(fps) or not 0.1 <= fps <= 1000.0:
        return _FALLBACK_FILE_FPS
    return fps
