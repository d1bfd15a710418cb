"""A bounded ring of a stream's compressed packets that always starts at a keyframe.

The main-stream reader (sources/mainstream.py) appends every packet it demuxes; a snapshot
worker asks for the packets that decode to a given moment (`window`). Bounded twice: by
bytes (memory) and by seconds of arrival time (how far back a snapshot may reach). Whole
GOPs are evicted from the front, so the first packet held is always a keyframe and every
packet held can be decoded; a GOP that alone exceeds a bound is dropped whole, and the
packets after it are dropped (counted) until the next keyframe starts a decodable run.

Thread-safe: one writer (the reader thread), any number of readers (the worker thread, the
event loop); every call holds the lock for a list copy at most, never for I/O or decoding.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["BufferedPacket", "PacketRing", "RingStats", "StreamInfo", "Window"]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a fresh decoder needs to decode one connection's packets, and their clock."""

    connection: int
    """Counts the reader's connections; packets of different connections never mix."""
    codec: str
    extradata: bytes | None
    width: int
    height: int
    time_base: float
    """Seconds per pts unit."""


@dataclass(frozen=True, slots=True)
class BufferedPacket:
    seq: int
    """Increasing over the ring's life; a gap between two packets means packets were lost."""
    data: bytes
    pts: int | None
    dts: int | None
    keyframe: bool
    arrival: float
    """Wall-clock arrival (time.time()): comparable with a frame's capture_time."""


@dataclass(frozen=True, slots=True)
class Window:
    """Packets from the last keyframe at or before a moment, to the newest held."""

    info: StreamInfo
    packets: tuple[BufferedPacket, ...]

    @property
    def newest_arrival(self) -> float:
        return self.packets[-1].arrival


@dataclass(frozen=True, slots=True)
class RingStats:
    bytes_held: int
    packets_held: int
    packets_dropped: int
    """Packets never held or evicted before a keyframe could start a decodable run."""
    oldest_arrival: float | None
    newest_arrival: float | None


class PacketRing:
    """See the module docstring."""

    def __init__(self, *, max_bytes: int, max_seconds: float) -> None:
        if max_bytes < 1 or not max_seconds > 0:
            raise ValueError(f"ring bounds must be positive: {max_bytes} B, {max_seconds} s")
        self._max_bytes = max_bytes
        self._max_seconds = max_seconds
        self._lock = threading.Condition()
        self._packets: deque[BufferedPacket] = deque()
        self._bytes = 0
        self._seq = 0
        self._dropped = 0
        self._info: StreamInfo | None = None
        self._realtime: float | None = None

    @property
    def info(self) -> StreamInfo | None:
        return self._info

    def set_realtime(self, info: StreamInfo, start: float) -> None:
        """The camera's wall-clock time (s) of pts 0 of connection `info`, from its RTCP
        sender reports (FFmpeg's `start_time_realtime`, known only once the first report
        came, after the connection opened)."""
        with self._lock:
            if info is self._info:
                self._realtime = start

    def realtime(self, info: StreamInfo) -> float | None:
        """`set_realtime`'s value while `info` is the current connection; None without."""
        with self._lock:
            return self._realtime if info is self._info else None

    def reset(self, info: StreamInfo | None) -> None:
        """A new connection (or none): the packets held belong to the old one and go."""
        with self._lock:
            self._packets.clear()
            self._bytes = 0
            self._info = info
            self._realtime = None
            self._lock.notify_all()

    def append(
        self, *, data: bytes, pts: int | None, dts: int | None, keyframe: bool, arrival: float
    ) -> bool:
        """Add one packet; False when it was dropped (no keyframe to start from)."""
        with self._lock:
            self._seq += 1
            if not self._packets and not keyframe:
                self._dropped += 1
                return False
            packet = BufferedPacket(
                seq=self._seq, data=data, pts=pts, dts=dts, keyframe=keyframe, arrival=arrival
            )
            self._packets.append(packet)
            self._bytes += len(data)
            self._evict(now=arrival)
            self._lock.notify_all()
            return bool(self._packets) and self._packets[-1] is packet

    def _evict(self, *, now: float) -> None:
        while self._packets and self._over(now=now):
            self._drop_first_gop()

    def _over(self, *, now: float) -> bool:
        return self._bytes > self._max_bytes or now - self._packets[0].arrival > self._max_seconds

    def _drop_first_gop(self) -> None:
        """Drop the first keyframe and everything up to the next keyframe (or all)."""
        packets = self._packets
        gop = [packets.popleft()]
        while packets and not packets[0].keyframe:
            gop.append(packets.popleft())
        self._bytes -= sum(len(packet.data) for packet in gop)
        if not packets:
            # The GOP being written was the one that went: it never served a snapshot, and
            # its later packets cannot be decoded without its keyframe, so they are dropped
            # too until the next keyframe.
            self._dropped += len(gop)

    def stats(self) -> RingStats:
        with self._lock:
            packets = self._packets
            return RingStats(
                bytes_held=self._bytes,
                packets_held=len(packets),
                packets_dropped=self._dropped,
                oldest_arrival=packets[0].arrival if packets else None,
                newest_arrival=packets[-1].arrival if packets else None,
            )

    def window(self, *, moment: float) -> Window | str:
        """The packets from the last keyframe shown at or before `moment` to the newest;
        or why there are none: "empty" (nothing held: down, or waiting for a keyframe) or
        "evicted" (the oldest keyframe held is shown after `moment`).

        A keyframe is shown at its arrival plus how far its display time runs ahead of its
        decoding time (B-frames): a keyframe that arrived just before `moment` may still
        show a later moment, and the frame of `moment` is then in the GOP before it."""
        with self._lock:
            info = self._info
            if info is None or not self._packets:
                return "empty"
            start = None
            for index, packet in enumerate(self._packets):
                if packet.arrival > moment:
                    break
                if packet.keyframe and _shown(packet, info) <= moment:
                    start = index
            if start is None:
                return "evicted"
            packets = tuple(self._packets)[start:]
            return Window(info=info, packets=packets)

    def extend(self, window: Window, *, until: float, timeout_s: float) -> Window:
        """`window` with the packets that arrived after it, waiting up to `timeout_s` for
        one that arrived after `until`. Packets from another connection, or a gap (the ring
        turned over meanwhile), end the window where it was."""
        with self._lock:
            self._lock.wait_for(lambda: self._newest_after(until), timeout=timeout_s)
            if self._info is not window.info or not self._packets:
                return window
            last = window.packets[-1].seq
            newer = [packet for packet in self._packets if packet.seq > last]
            if not newer or newer[0].seq != last + 1:
                return window
            return Window(info=window.info, packets=(*window.packets, *newer))

    def _newest_after(self, moment: float) -> bool:
        return bool(self._packets) and self._packets[-1].arrival > moment


def _shown(packet: BufferedPacket, info: StreamInfo) -> float:
    if packet.pts is None or packet.dts is None:
        return packet.arrival
    return packet.arrival + max(0, packet.pts - packet.dts) * info.time_base
