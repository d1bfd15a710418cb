"""How far a live camera's reader is behind its stream: the age a frame had when it was read.

A reader that cannot decode as fast as its camera sends does not fail: the frames wait in the
socket (RTSP over TCP) and each `grab()` returns an older one, so every detection is late by a
growing margin that no timestamp taken after `grab()` shows. The camera's own stream clock
(`CAP_PROP_POS_MSEC`) does: a frame's offset, arrival time minus stream time, is smallest when
the reader is caught up and grows by exactly the time it falls behind. The lag is the offset
above the smallest one of the last `window_s` seconds.

The window, not the session's minimum, is the reference so that what is not lag fades out
within it: the drift between the camera's clock and this host's (tens of ppm, a second a
day), or a timestamp jump the stream makes without going backwards. A reader that really falls
behind grows its lag by the whole shortfall within the window (at 10 % overload, 3 s in 30 s),
far above the threshold the service skips detections at, and skipping lets it catch up, which
brings the offset back to the reference.
"""

from __future__ import annotations

import math
from collections import deque

_BUCKETS = 6
"""The window's minimum is kept per bucket: memory and time per frame are constant."""
_BACKWARDS_S = 1.0
"""A stream clock that goes back by more than this has restarted: measure afresh."""


class StreamLag:
    """The reader's lag behind one live stream, updated with the frames it reads."""

    def __init__(self, *, window_s: float = 30.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self._bucket_s = window_s / _BUCKETS
        # (bucket start on the arrival clock, smallest offset in it), oldest first.
        self._buckets: deque[list[float]] = deque(maxlen=_BUCKETS + 1)
        self._last_stream_s = -math.inf

    def reset(self) -> None:
        """Forget the reference: for a new session (reconnect), whose timestamps start anew."""
        self._buckets.clear()
        self._last_stream_s = -math.inf

    def update(self, *, arrival_s: float, stream_s: float) -> float:
        """The lag of a frame read at `arrival_s` (monotonic) with stream time `stream_s`.

        0 for a frame without a usable timestamp (none, or no later than the previous one:
        some MJPEG and V4L2 sources), since nothing can be said of it.
        """
        if not math.isfinite(stream_s) or stream_s <= 0.0 or stream_s == self._last_stream_s:
            return 0.0
        if stream_s < self._last_stream_s - _BACKWARDS_S:
            self.reset()
        self._last_stream_s = max(stream_s, self._last_stream_s)
        offset = arrival_s - stream_s
        buckets = self._buckets
        if not buckets or arrival_s - buckets[-1][0] >= self._bucket_s:
            buckets.append([arrival_s, offset])
        elif offset < buckets[-1][1]:
            buckets[-1][1] = offset
        return offset - min(bucket[1] for bucket in buckets)
