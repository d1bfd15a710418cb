"""A camera's main stream, demuxed only: its compressed packets kept for snapshots.

For a camera detected on its substream (`detect_url`) whose snapshots come from its main
stream (`url`; config/mainstream.py), one thread per camera reads `url` with PyAV and keeps
every video packet in a `PacketRing` (bounded in bytes and seconds). It never decodes:
demuxing costs a small share of decoding the same stream, and a picture is decoded only
when a snapshot needs one (outputs/snapshots/mainframe.py). It shares nothing with the
substream's reader, so a slow or dead main stream never holds detection back.

Faults reconnect with the project's capped full-jitter backoff, like the camera readers; a
new connection empties the ring (packets of two connections do not decode together). State
and counts go to `MainStreamMetrics` (outputs/metrics.py).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

import av
import av.error

from edge_facedet.backoff import Backoff
from edge_facedet.sources.packetring import PacketRing, StreamInfo
from edge_facedet.sources.pyav import ffmpeg_options

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

__all__ = ["MainStreamReader", "MainStreamState", "MainStreamWatcher"]

log = logging.getLogger(__name__)

_STATS_INTERVAL_S = 1.0
"""How often the buffered bytes and drops are reported while packets flow."""


class MainStreamState(enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class MainStreamWatcher(Protocol):
    """Where a reader reports (outputs.metrics.MainStreamMetrics); called on its thread."""

    def state(self, camera_id: str, state: MainStreamState) -> None: ...

    def buffered(self, camera_id: str, *, bytes_held: int, packets_dropped: int) -> None: ...

    def reconnected(self, camera_id: str) -> None: ...


class MainStreamReader:
    """One camera's main-stream thread; see the module docstring. `url` may hold a
    password: only `display_url` is ever logged."""

    def __init__(
        self,
        *,
        camera_id: str,
        url: str,
        display_url: str,
        ring: PacketRing,
        read_timeout_s: float,
        backoff: Backoff,
        watcher: MainStreamWatcher,
    ) -> None:
        self.camera_id = camera_id
        self.ring = ring
        self._url = url
        self._display_url = display_url
        self._read_timeout_s = read_timeout_s
        self._backoff = backoff
        self._watcher = watcher
        self._stop = threading.Event()
        self._connections = 0
        self._state = MainStreamState.CONNECTING
        self._thread = threading.Thread(
            target=self._run, name=f"main-{camera_id}"[:15], daemon=True
        )

    @property
    def state(self) -> MainStreamState:
        return self._state

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _set_state(self, state: MainStreamState) -> None:
        self._state = state
        self._watcher.state(self.camera_id, state)

    def _run(self) -> None:
        self._set_state(MainStreamState.CONNECTING)
        while not self._stop.is_set():
            reason = self._connect_and_demux()
            self.ring.reset(None)
            if self._stop.is_set():
                break
            self._set_state(MainStreamState.RECONNECTING)
            delay = self._backoff.next_delay()
            log.warning(
                "camera %s: main stream %s: %s; reconnecting in %.1f s (snapshots use the "
                "detected stream meanwhile)",
                self.camera_id,
                self._display_url,
                reason,
                delay,
            )
            self._watcher.reconnected(self.camera_id)
            self._stop.wait(delay)
        self._set_state(MainStreamState.STOPPED)

    def _connect_and_demux(self) -> str:
        """One connection, read until it fails or stop; why it ended."""
        try:
            container = av.open(
                self._url,
                options=ffmpeg_options(url=self._url, read_timeout_s=self._read_timeout_s),
                metadata_errors="replace",
            )
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            return f"could not open it: {_reason(exc)}"
        try:
            if not container.streams.video:
                return "it has no video stream"
            stream = container.streams.video[0]
            self._connections += 1
            self.ring.reset(_stream_info(container, stream, connection=self._connections))
            log.info(
                "camera %s: main stream %s: %dx%d %s, demuxed for snapshots",
                self.camera_id,
                self._display_url,
                stream.codec_context.width,
                stream.codec_context.height,
                stream.codec_context.name,
            )
            return self._demux(container, stream)
        finally:
            container.close()

    def _demux(self, container: InputContainer, stream: VideoStream) -> str:
        reported = 0.0
        streaming = False
        info = self.ring.info
        clocked = info is None
        try:
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return "stopped"
                if not packet.size:
                    continue  # the flush packet at the end
                self.ring.append(
                    data=bytes(packet),
                    pts=packet.pts,
                    dts=packet.dts,
                    keyframe=packet.is_keyframe,
                    arrival=time.time(),
                )
                if not clocked:
                    clocked = self._clock(container, info)
                if not streaming:
                    streaming = True
                    self._backoff.reset()
                    self._set_state(MainStreamState.STREAMING)
                now = time.monotonic()
                if now - reported >= _STATS_INTERVAL_S:
                    reported = now
                    self._report()
        except (av.error.FFmpegError, OSError) as exc:
            return f"read failed: {_reason(exc)}"
        finally:
            self._report()
        return "the stream ended"

    def _clock(self, container: InputContainer, info: StreamInfo | None) -> bool:
        """Hand the ring the RTCP clock once FFmpeg has it; whether it did."""
        start = _realtime_s(container)
        if start is None or info is None:
            return False
        self.ring.set_realtime(info, start)
        log.info(
            "camera %s: main stream %s: RTCP sender reports give its wall clock",
            self.camera_id,
            self._display_url,
        )
        return True

    def _report(self) -> None:
        stats = self.ring.stats()
        self._watcher.buffered(
            self.camera_id, bytes_held=stats.bytes_held, packets_dropped=stats.packets_dropped
        )


def _realtime_s(container: InputContainer) -> float | None:
    """The wall-clock time (s) of the stream's pts 0 from RTCP sender reports: FFmpeg sets
    it at the first report (RTSP only); None before and without."""
    realtime = getattr(container, "start_time_realtime", None)
    return realtime / 1e6 if isinstance(realtime, int) and realtime > 0 else None


def _stream_info(container: InputContainer, stream: VideoStream, *, connection: int) -> StreamInfo:
    context = stream.codec_context
    return StreamInfo(
        connection=connection,
        codec=context.name,
        extradata=bytes(context.extradata) if context.extradata else None,
        width=context.width,
        height=context.height,
        time_base=float(stream.time_base) if stream.time_base else 1 / 90000,
    )


def _reason(exc: BaseException) -> str:
    # FFmpeg's messages name the URL only as given; the caller logs the redacted one.
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else type(exc).__name__
