"""A file camera's media clock and real-time pacing.

A file has no arrival clock of its own: its frames are placed on a media clock (frame count /
the container's frame rate), continuous across loops and reopens, which the detect grid
runs on. A `realtime` file is also read no faster than that clock, like a live camera; one
read as fast as possible is not paced at all.
"""

from __future__ import annotations

import math

FALLBACK_FILE_FPS = 25.0
"""Pace for files whose container declares no usable frame rate."""
MAX_PACING_LAG_S = 1.0
"""A realtime file camera that fell further behind than this restarts its pacing clock rather
than reading the backlog as fast as possible."""


def usable_fps(declared: float) -> float:
    """The container's frame rate, or `FALLBACK_FILE_FPS` when it declares none usable."""
    if not math.isfinite(declared) or not 0.1 <= declared <= 1000.0:
        return FALLBACK_FILE_FPS
    return declared


class FilePacer:
    """The media clock of one file camera, across all its sessions."""

    def __init__(self, *, realtime: bool) -> None:
        self._realtime = realtime
        self._media_clock_s = 0.0
        self._frame_interval_s = 1.0 / FALLBACK_FILE_FPS
        self._origin_s = 0.0

    def start(self, *, declared_fps: float, now: float) -> None:
        """Begin a session of a file declaring `declared_fps`, at monotonic time `now`: the
        media clock continues where the last session left it."""
        self._frame_interval_s = 1.0 / usable_fps(declared_fps)
        self._origin_s = now - self._media_clock_s

    def wait_s(self, *, now: float) -> float:
        """How long to wait before grabbing the next frame (0 when it is due or late)."""
        if not self._realtime:
            return 0.0
        lag = now - (self._origin_s + self._media_clock_s)
        if lag > MAX_PACING_LAG_S:
            self._origin_s += lag
            return 0.0
        return max(0.0, -lag)

    def next_frame(self) -> float:
        """The media-clock time of the frame just grabbed; the clock moves one frame on."""
        clock_s = self._media_clock_s
        self._media_clock_s += self._frame_interval_s
        return clock_s
