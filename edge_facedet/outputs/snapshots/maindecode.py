"""Main-stream pictures decoded on demand from buffered packets (sources/packetring.py).

A decoder per camera (`GopCursor`) kept by the snapshot worker between snapshots, so the
snapshots of one GOP share one decoding pass; nothing is shared with the reader thread
(which never decodes), and a damaged packet resets the cursor: it spoils one snapshot, not
the stream. Blocking (decoding at full resolution): the worker's thread only.

Times: each packet's arrival is on the wall clock, as a live frame's `capture_time` is. A
decoded frame's time is its timestamp on the stream's clock, mapped to the wall clock by
the packet that arrived earliest relative to its timestamp (the least delayed one), so
network jitter does not move the mapping, and B-frame reordering does not either (their
decode timestamps are used where the stream gives them).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import av
import av.error

if TYPE_CHECKING:
    from av.video.codeccontext import VideoCodecContext
    from av.video.frame import VideoFrame

    from edge_facedet.sources.packetring import StreamInfo, Window

__all__ = ["CursorPool", "GopCursor", "MainFrame"]


@dataclass(frozen=True, slots=True)
class MainFrame:
    time: float
    """Wall-clock time of the moment this frame shows, on the arrival clock (see the
    module docstring)."""
    pts: int
    frame: VideoFrame


class GopCursor:
    """One camera's main-stream decoder, kept between snapshots: decode once per GOP.

    A snapshot whose frames lie at or after where the last one stopped, in the same run of
    packets, continues from there instead of decoding its GOP again from the keyframe; the
    last `keep` decoded frames stay held (refcounted decoder buffers, not copies), so jobs
    a little out of time order, or several faces of one moment, are served without
    decoding again. Anything else (another connection, a moment before the frames held, a
    gap in the packets, a decoder error) starts afresh at the window's keyframe.
    Not thread-safe: the snapshot worker's thread only.
    """

    def __init__(self, *, keep: int) -> None:
        self._keep = keep
        self._context: VideoCodecContext | None = None
        self._info: StreamInfo | None = None
        self._fed = -1
        """The seq of the last packet fed; -1: nothing yet."""
        self._keyframe = -1
        """The seq of the keyframe the decoder started at."""
        self._clock = float("inf")
        self._frames: deque[tuple[int, VideoFrame]] = deque(maxlen=keep)
        self.used = 0.0
        """time.monotonic() of the last use, for dropping idle cursors."""
        self.fresh = False
        """Whether the last `CursorPool.cursor` call restarted it at a keyframe."""
        self.decoded = 0
        """Frames decoded over the cursor's life."""

    @property
    def frames(self) -> list[MainFrame]:
        """The frames held, in display order, on the arrival clock."""
        info = self._info
        if info is None or not self._frames:
            return []
        return [
            MainFrame(time=self._clock + pts * info.time_base, pts=pts, frame=frame)
            for pts, frame in self._frames
        ]

    def latest(self) -> float:
        """The arrival-clock time of the newest frame held; -inf without one."""
        frames = self._frames
        info = self._info
        if info is None or not frames:
            return -float("inf")
        return self._clock + frames[-1][0] * info.time_base

    def continues(self, window: Window, *, earliest: float) -> bool:
        """Whether the frames of `window` from `earliest` (arrival clock) on are held or
        ahead of the cursor, so decoding goes on from where it is."""
        if self._context is None or self._info is not window.info:
            return False
        packets = window.packets
        first, last = packets[0].seq, packets[-1].seq
        if not first - 1 <= self._fed <= last:
            return False  # the window starts after the cursor, or the cursor is past it
        if self._fed < last and packets[self._fed + 1 - first].seq != self._fed + 1:
            return False  # not one run of packets (cannot happen in a window; checked)
        frames = self._frames
        if not frames or self.latest() < earliest:
            return True  # the frames asked for are all ahead
        # The held frames cover `earliest` if the oldest is at or before it, or if they are
        # every frame since a keyframe at or before the window's (none dropped yet): the
        # window has no frame before its keyframe to give.
        oldest = self._clock + frames[0][0] * window.info.time_base
        everything = len(frames) < self._keep and self._keyframe <= first
        return oldest <= earliest or everything

    def restart(self, window: Window) -> None:
        """Start afresh at the window's keyframe, dropping the frames held."""
        info = window.info
        context = cast("VideoCodecContext", av.CodecContext.create(info.codec, "r"))
        if info.extradata:
            context.extradata = info.extradata
        context.thread_count = 1  # the worker's one thread; snapshots must not take every core
        self._context, self._info = context, info
        self._keyframe = window.packets[0].seq
        self._fed = self._keyframe - 1
        self._clock = float("inf")
        self._frames.clear()

    def feed(self, window: Window, *, until: float) -> bool:
        """Decode the window's packets after the cursor until a frame at or after `until`
        (arrival clock) comes out; whether one did. av.error.FFmpegError (the cursor is
        then reset) when the packets do not decode."""
        context = self._context
        assert context is not None  # noqa: S101 - start() made one
        info = window.info
        first = window.packets[0].seq
        try:
            for buffered in window.packets[self._fed + 1 - first :]:
                stamp = buffered.dts if buffered.dts is not None else buffered.pts
                if stamp is not None:
                    self._clock = min(self._clock, buffered.arrival - stamp * info.time_base)
                packet = av.Packet(buffered.data)
                packet.pts, packet.dts = buffered.pts, buffered.dts
                frames = context.decode(packet)
                self.decoded += len(frames)
                self._fed = buffered.seq
                self._frames.extend((f.pts, f) for f in frames if f.pts is not None)
                if self.latest() >= until:
                    return True
        except Exception:
            self._context = None  # the next snapshot starts afresh
            raise
        return False


class CursorPool:
    """The worker's cursors: `per_camera` for each camera (a snapshot of a past moment,
    such as a track's end, does not cost the cursor that follows the live moments its
    place), at most `limit` in all, least recently used dropped first, and any idle for
    `idle_s` dropped with its frames. The worker's thread only."""

    def __init__(self, *, per_camera: int, limit: int, keep: int, idle_s: float) -> None:
        self._per_camera = per_camera
        self._limit = limit
        self._keep = keep
        self._idle_s = idle_s
        self._cursors: OrderedDict[tuple[str, int], GopCursor] = OrderedDict()

    def cursor(self, camera_id: str, window: Window, *, earliest: float) -> GopCursor:
        """A cursor ready to decode `window` from `earliest` on: one of the camera's that
        can go on, else its least recently used one, restarted."""
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.used > self._idle_s]:
            del self._cursors[key]
        mine = [k for k in self._cursors if k[0] == camera_id]  # least recently used first
        chosen = next(
            (k for k in mine if self._cursors[k].continues(window, earliest=earliest)), None
        )
        fresh = chosen is None
        if chosen is None:
            free = [i for i in range(self._per_camera) if (camera_id, i) not in self._cursors]
            chosen = (camera_id, free[0]) if free else mine[0]
            self._cursors[chosen] = self._cursors.get(chosen) or GopCursor(keep=self._keep)
            self._cursors[chosen].restart(window)
        cursor = self._cursors.pop(chosen)
        cursor.fresh = fresh
        self._cursors[chosen] = cursor  # most recently used last
        while len(self._cursors) > self._limit:
            self._cursors.popitem(last=False)
        cursor.used = now
        return cursor
