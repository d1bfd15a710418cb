"""Main-stream pictures decoded on demand from buffered packets (sources/packetring.py).

A fresh decoder per snapshot, fed from the window's keyframe: nothing is shared with the
reader thread (which never decodes) and a damaged packet spoils one snapshot, not the
stream. Blocking (decoding a GOP at full resolution): a worker thread only.

Times: each packet's arrival is on the wall clock, as a live frame's `capture_time` is. A
decoded frame's time is its timestamp on the stream's clock, mapped to the wall clock by
the packet that arrived earliest relative to its timestamp (the least delayed one), so
network jitter does not move the mapping, and B-frame reordering does not either (their
decode timestamps are used where the stream gives them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import av
import av.error

if TYPE_CHECKING:
    from av.video.codeccontext import VideoCodecContext
    from av.video.frame import VideoFrame

    from edge_facedet.sources.packetring import Window

__all__ = ["MainFrame", "decode_near", "stream_clock"]


@dataclass(frozen=True, slots=True)
class MainFrame:
    time: float
    """Wall-clock time of the moment this frame shows (see the module docstring)."""
    frame: VideoFrame


def stream_clock(window: Window) -> float | None:
    """c with wall = c + timestamp * time_base for the window's packets; None without any
    timestamp."""
    base = window.info.time_base
    offsets = [
        packet.arrival - stamp * base
        for packet in window.packets
        if (stamp := packet.dts if packet.dts is not None else packet.pts) is not None
    ]
    return min(offsets) if offsets else None


def decode_near(window: Window, *, moment: float, within_s: float) -> list[MainFrame]:
    """The window's frames whose time is within `within_s` of `moment`, in display order;
    av.error.FFmpegError (or ValueError: no clock) when the packets do not decode."""
    clock = stream_clock(window)
    if clock is None:
        raise ValueError("the main stream's packets carry no timestamps")
    info = window.info
    context = cast("VideoCodecContext", av.CodecContext.create(info.codec, "r"))
    if info.extradata:
        context.extradata = info.extradata
    context.thread_count = 1  # the worker's one thread; snapshots must not take every core
    frames: list[MainFrame] = []
    latest = -float("inf")
    for buffered in (*window.packets, None):
        if buffered is None:
            decoded = context.decode(None)  # the frames a reordering decoder still holds
        else:
            packet = av.Packet(buffered.data)
            packet.pts, packet.dts = buffered.pts, buffered.dts
            decoded = context.decode(packet)
        for frame in decoded:
            if frame.pts is None:
                continue
            time = clock + frame.pts * info.time_base
            latest = max(latest, time)
            if abs(time - moment) <= within_s:
                frames.append(MainFrame(time=time, frame=frame))
        if latest > moment + within_s:
            break  # decoding on would only pass frames after the window
    frames.sort(key=lambda item: item.time)
    return frames
