"""Camera readers: one thread per camera that opens, reads, rate-limits and reconnects a source.

A `CameraReader` is the supervisor of everything between a camera URL and the `Frame` it
hands on: it owns the thread, opens the source through the session for its kind of source
(edge_facedet.sources.sessions), which grabs frames and hands the due ones to the camera's
`FrameSink`, and on a fault (open failure, read failure, end of stream, stall) reconnects
with capped full-jitter backoff. It reports its state through `on_status` and the
`camera_*` / `frames_*` metrics. Nothing ever raises out of the thread.

Known limits of "a blocking read cannot hang the thread":

- FFmpeg sources are bounded by `CAP_PROP_READ_TIMEOUT_MSEC`: OpenCV's interrupt callback
  aborts a read that waits longer. After such an abort OpenCV drains frames still buffered in
  the decoder, each drained `grab()` again waiting the read timeout: a grab slower than
  the stall timeout counts as a stall, so with stall <= read timeout a stall is seen after
  one read timeout (else after up to about three), and stop() answers within about one. PyAV
  sources are bounded by FFmpeg's socket timeouts (`timeout`, `rw_timeout`) at the read
  timeout, after the probe (edge_facedet.sources.probe) has bounded the connect by the open
  timeout.
- `grab()` already demuxes and decodes (H.264 frames reference each other, so every frame must
  be decoded, except with the PyAV source's `keyframes_only`); skipping `retrieve()` saves the
  colour conversion only, the smaller part of a frame's cost (see docs/benchmarks.md).
- V4L2 devices ignore OpenCV's timeout properties; a stalled device blocks each read for
  `OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT` seconds (OpenCV's default: 10), read once per process.
- A file camera's path is checked before the decoder opens it, in a helper thread waited
  for at most the open timeout (edge_facedet.sources.filecheck): a FIFO is refused and a
  mount that does not answer is reported instead of blocking the open, which under OpenCV
  holds the lock every other camera's open waits for.
- Anything else that blocks inside native code without a timeout (a driver bug, a mount that
  hangs while its file is read) blocks this thread only (reads take no shared lock); the
  thread is a daemon so it cannot block interpreter exit, and `join()` reports it with
  False. Python cannot kill a thread, and releasing the capture from another thread while it
  is in use would be a use-after-free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, TypeVar

from edge_facedet.logthrottle import every_power_of_two
from edge_facedet.redact import redact_text, redact_url, url_secrets
from edge_facedet.sources.dispatch import FrameSink
from edge_facedet.sources.faults import CameraFaultError
from edge_facedet.sources.sessions import ReaderContext, SessionEnd, session_for
from edge_facedet.sources.settings import ReaderSettings, ReconnectPolicy, StreamTimeouts
from edge_facedet.sources.status import CameraState, CameraStatus, ReaderMetrics, StatusBoard

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_facedet.frames import Frame
    from edge_facedet.outputs.metrics import Metrics

__all__ = [
    "READER_THREAD_PREFIX",
    "CameraReader",
    "CameraState",
    "CameraStatus",
    "FrameSink",
    "ReaderSettings",
    "ReconnectPolicy",
    "StreamTimeouts",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

READER_THREAD_PREFIX = "cam-"
"""Each reader's thread is named this plus its camera id, in Python and for the OS (`top -H`,
/proc keep 15 bytes of it)."""


class CameraReader:
    """Reads one camera in a thread of its own and hands every due frame to its sink."""

    def __init__(
        self,
        *,
        settings: ReaderSettings,
        sink: FrameSink,
        on_status: Callable[[CameraStatus], None],
        metrics: Metrics,
    ) -> None:
        camera_id = settings.camera_id
        self._settings = settings
        self._camera_id = camera_id
        # The password and credential query values, as written and percent-decoded.
        self._secrets = url_secrets(settings.url)
        self._sink = sink
        self._on_status = on_status
        self._callback_errors = 0
        self._stop_requested = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"{READER_THREAD_PREFIX}{camera_id}", daemon=True
        )
        self._metrics = ReaderMetrics.for_camera(metrics, camera_id=camera_id)
        self._backoff = settings.reconnect.backoff()
        self._board = StatusBoard(camera_id=camera_id, report=self._report_status)
        self._session = session_for(
            ReaderContext(
                settings=settings,
                safe_url=redact_url(settings.url),
                secrets=self._secrets,
                stop=self._stop_requested,
                board=self._board,
                metrics=self._metrics,
                backoff=self._backoff,
                sink=sink,
                deliver=self._deliver,
            )
        )

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
        return self._board.current

    # -- thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        _name_native_thread(self._thread.name)
        if self._settings.nice:
            self._lower_priority()
        try:
            self._run_sessions()
        except Exception as exc:  # noqa: BLE001 - the thread must end in a known state
            # One redacted line: a traceback could quote the URL, password included.
            log.error(  # noqa: TRY400
                "camera %s: reader crashed: %s", self._camera_id, self._describe(exc=exc)
            )
            self._board.set_state(CameraState.FAILED, last_error=self._describe(exc=exc))
        finally:
            self._metrics.up.set(0)
        if self._stop_requested.is_set():
            self._board.set_state(CameraState.STOPPED)

    def _lower_priority(self) -> None:
        # Linux applies PRIO_PROCESS to the one thread whose id is given; FFmpeg's decoder
        # threads, started later from this thread, inherit its niceness.
        try:
            thread_id = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, thread_id)
            os.setpriority(os.PRIO_PROCESS, thread_id, min(current + self._settings.nice, 19))
        except OSError as exc:
            log.warning("camera %s: cannot lower the reader's priority: %s", self._camera_id, exc)

    def _run_sessions(self) -> None:
        self._board.set_state(CameraState.STARTING)
        while not self._stop_requested.is_set():
            try:
                end = self._capture()
            except CameraFaultError as fault:
                error = str(fault)
            except Exception as exc:  # noqa: BLE001 - a bug in one session must not end the camera
                error = f"unexpected {self._describe(exc=exc)}"
            else:
                if end is SessionEnd.REOPEN:
                    continue
                if end is SessionEnd.FINISHED:
                    self._metrics.up.set(0)
                    self._board.set_state(CameraState.STOPPED)
                return  # finished, or stop requested inside the session
            self._metrics.up.set(0)
            if self._stop_requested.is_set():
                return
            if not self._wait_before_reconnect(error=error):
                return

    def _capture(self) -> SessionEnd:
        """One capture session, from open to fault (raised), end of source or stop."""
        source = self._session.open()
        try:
            return self._session.read(source)
        finally:
            source.release()

    def _wait_before_reconnect(self, *, error: str) -> bool:
        """Back off after a fault; False when the reader should end (stopped or failed)."""
        attempt = self._backoff.attempt
        if self._settings.reconnect.gives_up(attempts=attempt):
            log.error(
                "camera %s: giving up after %d reconnect attempts: %s",
                self._camera_id,
                attempt,
                error,
            )
            self._board.set_state(CameraState.FAILED, last_error=error)
            return False
        delay = self._backoff.next_delay()
        # A camera that is down for days retries at the capped delay: log the first attempts
        # and then fewer and fewer, so one dead camera cannot flood the journal.
        level = logging.WARNING if every_power_of_two(attempt) else logging.DEBUG
        log.log(
            level,
            "camera %s: %s; reconnect attempt %d in %.1f s",
            self._camera_id,
            error,
            attempt + 1,
            delay,
        )
        self._board.set_state(CameraState.RECONNECTING, last_error=error)
        if self._stop_requested.wait(delay):
            return False
        self._metrics.reconnects.inc()
        self._board.count_reconnect()
        return True

    # -- consumer callbacks ----------------------------------------------------------------

    def _deliver(self, frame: Frame) -> None:
        self._call_back(self._sink.put, frame)

    def _report_status(self, status: CameraStatus) -> None:
        self._call_back(self._on_status, status)

    def _call_back(self, callback: Callable[[_T], None], argument: _T) -> None:
        """Run a consumer callback; its bugs are logged, never allowed to end the camera."""
        try:
            callback(argument)
        except Exception as exc:  # noqa: BLE001 - the consumer's bug must not stop reading
            self._callback_errors += 1
            # The first failures are visible, a persistent bug does not flood.
            if every_power_of_two(self._callback_errors):
                log.error(  # noqa: TRY400 - one redacted line (see _run)
                    "camera %s: %s failed (%d times so far): %s",
                    self._camera_id,
                    getattr(callback, "__name__", "callback"),
                    self._callback_errors,
                    self._describe(exc=exc),
                )

    def _describe(self, *, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return " ".join(redact_text(text, *self._secrets).split())


def _name_native_thread(name: str) -> None:
    """Show `name` for this thread in `top -H`, `ps -L` and /proc (Linux keeps 15 bytes).

    Python names its threads for itself only; an operator asking which thread burns a core
    sees the process name on every thread. Best effort: other systems have no such file.
    """
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as comm:  # noqa: PTH123
        comm.write(name.encode("utf-8")[:15].decode("utf-8", "ignore"))
