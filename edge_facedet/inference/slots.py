"""Latest-frame slots: where a camera's reader thread hands its newest frame to the scheduler.

A `LatestFrameSlot` holds at most one frame of one camera: a newer frame replaces an
unprocessed one and the drop is counted; readers that ask `claim()` first skip converting a
frame while the previous one still waits; lossless file readers wait with
`wait_until_empty()` instead, so they never drop. Every put wakes the scheduler on its event
loop through a shared `Wakeup`, which coalesces wake-ups from any number of threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_facedet.frames import Frame

__all__ = ["LatestFrameSlot", "Wakeup"]


class Wakeup:
    """Sets an asyncio.Event from any thread, scheduling at most one wake-up at a time.

    While `mute`d (until `listen`), notifications schedule nothing: the scheduler mutes it
    while it waits for a free request rather than for frames, so that a reader's frame then
    costs neither a write to the loop's self-pipe nor a turn of the loop that finds no
    request to send it with (the usual case when the detector is the bottleneck).
    """

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.event = asyncio.Event()
        self._lock = threading.Lock()
        self._scheduled = False
        self._listening = True

    def listen(self) -> None:
        """On the loop: clear the event and take notifications again. Scan the slots after
        this call: a frame put before it is found there, one put after it sets the event."""
        with self._lock:
            self._listening = True
        self.event.clear()

    def mute(self) -> None:
        """On the loop: schedule nothing for notifications until `listen`."""
        with self._lock:
            self._listening = False

    def notify(self) -> None:
        with self._lock:
            if self._scheduled or not self._listening:
                return
            self._scheduled = True
        # A closed loop means the service is shutting down; the frame is not needed then.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        with self._lock:
            self._scheduled = False
        self.event.set()


class LatestFrameSlot:
    """At most one frame of one camera, waiting for the scheduler."""

    def __init__(self, *, camera_id: str, on_drop: Callable[[], None], wakeup: Wakeup) -> None:
        self.camera_id = camera_id
        self._on_drop = on_drop
        self._wakeup = wakeup
        self._lock = threading.Lock()
        self._emptied = threading.Condition(self._lock)
        self._frame: Frame | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        """Called by the camera's reader thread; never blocks beyond a short lock."""
        with self._lock:
            replaced = self._frame is not None
            self._frame = frame
            if replaced:
                self.dropped += 1
        if replaced:
            self._on_drop()
        self._wakeup.notify()

    def claim(self) -> bool:
        """Whether a reader should hand on a new frame now (called before converting it).

        False while the previous frame still waits for the detector: that frame is kept and
        the new one counted as dropped before the reader spends its BGR conversion and
        resize (a large share of a reader's CPU: docs/benchmarks.md) on a frame that would
        only replace it. The kept frame is at most one scheduler round older than the newest;
        this only happens while the detector is saturated.
        """
        with self._lock:
            if self._frame is None:
                return True
            self.dropped += 1
        self._on_drop()
        return False

    def wait_until_empty(self, timeout: float) -> bool:
        """Block the reader until the scheduler has taken the waiting frame; False on timeout.

        For lossless readers (files read faster than real time): they hand on a frame only
        into an empty slot, so nothing is replaced and no decoded frame is wasted.
        """
        with self._emptied:
            return self._emptied.wait_for(lambda: self._frame is None, timeout)

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
            if frame is not None:
                self._emptied.notify()
        return frame
