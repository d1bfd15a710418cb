"""The `pyav` decoder: FFmpeg through PyAV, for streams and files.

It can decode less than every frame (`DecodeOptions.keyframes_only`, `skip_loop_filter`),
converts and resizes a due frame in one swscale pass, turns frames whose display matrix says
so (a phone clip stored sideways) upright, as OpenCV does, and bounds network reads by
FFmpeg's socket timeouts (the reader's probe bounds the connect). A due frame's full-size
picture (`PyAvPicture`) is the decoded frame itself, converted only when a snapshot asks.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import TYPE_CHECKING

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from edge_facedet.sources.source import CAPTURE_OPTIONS_VARIABLE, DecodeOptions, SourceError
from edge_facedet.sources.urls import takes_socket_timeouts

if TYPE_CHECKING:
    from collections.abc import Iterator

    from av.container import InputContainer
    from av.packet import Packet
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream
    from numpy.typing import NDArray

    from edge_facedet.frames import Picture

_MAX_UNDECODABLE_PACKETS = 64
"""Packets the decoder rejects in a row before a grab fails (OpenCV's own loop skips such
packets too): a damaged spot is skipped, a stream of garbage is a fault."""


class PyAvSource:
    """A `VideoSource` read through PyAV (FFmpeg's libraries, no OpenCV)."""

    def __init__(
        self, *, url: str, options: DecodeOptions, read_timeout_s: float, stall_timeout_s: float
    ) -> None:
        try:
            # No PyAV `timeout`: its interrupt callback takes the GIL at every I/O check of
            # FFmpeg's (hundreds per second per stream). FFmpeg's socket timeouts bound
            # the reads instead, and the reader's probe bounds the connect.
            container = av.open(
                url,
                options=ffmpeg_options(url=url, read_timeout_s=read_timeout_s),
                metadata_errors="replace",
            )
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"FFmpeg could not open it: {_reason(exc)}") from None
        try:
            self._stream = _video_stream(container=container, options=options)
        except SourceError:
            container.close()
            raise
        self._container: InputContainer = container
        self._keyframes_only = options.keyframes_only
        self._stall_timeout_s = stall_timeout_s
        self._packets: Iterator[Packet[VideoStream]] = container.demux(self._stream)
        self._decoded: list[VideoFrame] = []
        self._frame: VideoFrame | None = None
        # One scaler for the session, on the reader's own thread: a frame's `to_ndarray` would
        # build one per call with a worker thread per core (see docs/benchmarks.md).
        self._reformatter = VideoReformatter()
        # Motion's small grey picture has a scaler of its own: swscale keeps one context per
        # scaler and rebuilds it whenever the output changes, which alternating between the
        # grey picture and the network input on one scaler would do at every due frame.
        self._gray_reformatter = VideoReformatter()

    def grab(self) -> bool:
        rejected = 0
        # Packets that keep coming without a frame (skipped non-keyframes, a decoder waiting
        # for its first keyframe, a stream of garbage) end in a stall, as silence does.
        deadline = time.monotonic() + self._stall_timeout_s
        while not self._decoded:
            if time.monotonic() > deadline:
                return False
            try:
                packet = next(self._packets)
            except StopIteration:
                return False
            except (av.error.FFmpegError, OSError):
                # Demuxing ended the generator (timeout, reset connection, truncated file):
                # this and every later grab fail, as OpenCV's do.
                self._packets = iter(())
                return False
            # The demuxer ends with an empty packet that flushes the decoder.
            if self._keyframes_only and packet.size and not packet.is_keyframe:
                continue
            try:
                self._decoded = self._decode(packet)
            except av.error.FFmpegError:
                rejected += 1
                if rejected >= _MAX_UNDECODABLE_PACKETS:
                    return False
        self._frame = self._decoded.pop(0)
        return True

    def _decode(self, packet: Packet[VideoStream]) -> list[VideoFrame]:
        frames = packet.decode()
        if self._keyframes_only and packet.size:
            # A decoder that reorders (B-frames) holds a frame back until later packets
            # arrive, which would be the next keyframes, GOPs later. A keyframe needs no other
            # frame: drain the decoder now and reset it for the next one.
            context = self._stream.codec_context
            frames += context.decode(None)
            context.flush_buffers()
        return frames

    def retrieve(self, *, size: tuple[int, int]) -> tuple[NDArray[np.uint8], int, int]:
        frame = self._frame
        if frame is None:
            raise SourceError("could not decode a frame")
        quarter_turns = _quarter_turns(frame)
        sideways = quarter_turns % 2 == 1
        # Scaled to the stored orientation of the display size, then turned: the common,
        # unrotated frame still takes one swscale pass and no copy.
        stored = (size[1], size[0]) if sideways else size
        # One swscale pass converts and resizes, never making a full-size BGR copy.
        image = _scaled(self._reformatter, frame, stored=stored, pixel_format="bgr24")
        display = (frame.height, frame.width) if sideways else (frame.width, frame.height)
        return image, *display

    def gray(self, *, height: int) -> NDArray[np.uint8]:
        frame = self._frame
        if frame is None:
            raise SourceError("could not decode a frame")
        quarter_turns = _quarter_turns(frame)
        display_width, display_height = _display_size(frame)
        width = max(1, round(height * display_width / display_height))
        stored = (height, width) if quarter_turns % 2 else (width, height)
        # Straight from the decoded planes to a small grey picture: swscale scales the luma
        # plane only, no full-size BGR is made. Bilinear (swscale widens its filter to the
        # downscale ratio); area averaging costs several times as much.
        return _scaled(self._gray_reformatter, frame, stored=stored, pixel_format="gray")

    def picture(self) -> Picture:
        frame = self._frame
        if frame is None:
            raise SourceError("no frame was retrieved")
        return PyAvPicture(frame=frame, wall_time=self._wall_time(frame))

    def _wall_time(self, frame: VideoFrame) -> float | None:
        """The frame's moment on the camera's clock from RTCP sender reports (FFmpeg's
        `start_time_realtime`, set at the first report; RTSP only): snapshots from the main
        stream match frames on it (outputs/snapshots/mainframe.py)."""
        realtime = self._container.start_time_realtime
        if not isinstance(realtime, int) or realtime <= 0 or frame.time is None:
            return None
        return realtime / 1e6 + float(frame.time)

    def stream_time_s(self) -> float:
        frame = self._frame
        time_s = None if frame is None else frame.time
        return math.nan if time_s is None else float(time_s)

    def fps(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return math.nan if not rate else float(rate)

    def rewind(self) -> bool:
        try:
            # From the stream's first timestamp: MPEG-TS starts well above 0.
            self._container.seek(self._stream.start_time or 0, stream=self._stream)
        except (av.error.FFmpegError, OSError):
            return False
        self._stream.codec_context.flush_buffers()
        self._packets = self._container.demux(self._stream)
        self._decoded = []
        self._frame = None
        return True

    def release(self) -> None:
        self._frame = None
        self._decoded = []
        self._container.close()


class PyAvPicture:
    """A `Picture` that holds a decoded frame and converts it to BGR only when asked.

    It holds a reference to the frame's buffers, not a copy: FFmpeg's decoded frames are
    refcounted, so the decoder takes other buffers for later frames while this one is held,
    and its pixels stay as decoded, after later grabs and after the source is released.
    """

    __slots__ = ("_frame", "_lock", "wall_time")

    def __init__(self, *, frame: VideoFrame, wall_time: float | None = None) -> None:
        self._frame = frame
        self.wall_time = wall_time
        """The frame's moment on the camera's wall clock (RTCP); None where unknown."""
        # PyAV's conversion changes the source frame's colour tags while it runs and puts
        # them back after: two threads converting one picture at once could leave them changed.
        self._lock = threading.Lock()

    @property
    def width(self) -> int:
        return _display_size(self._frame)[0]

    @property
    def height(self) -> int:
        return _display_size(self._frame)[1]

    def to_bgr(self) -> NDArray[np.uint8]:
        """The frame as a new BGR array at full size, upright; a full-size conversion, so
        called from a snapshot's worker thread, never the reader's or the event loop."""
        frame = self._frame
        try:
            with self._lock:
                # A scaler of its own: the reader's is not safe to share across threads, and
                # the frame's own (`frame.to_ndarray`) would start a worker per core. Bicubic
                # chroma, as OpenCV's decoder converts.
                converted = VideoReformatter().reformat(
                    frame, format="bgr24", interpolation="BICUBIC", threads=1
                )
                image = converted.to_ndarray()
        except (av.error.FFmpegError, ValueError) as exc:
            raise SourceError(f"could not convert a frame: {_reason(exc)}") from None
        quarter_turns = _quarter_turns(frame)
        if quarter_turns:
            image = np.rot90(image, k=quarter_turns)
        return np.ascontiguousarray(image, dtype=np.uint8)


def _scaled(
    reformatter: VideoReformatter,
    frame: VideoFrame,
    *,
    stored: tuple[int, int],
    pixel_format: str,
) -> NDArray[np.uint8]:
    """`frame` scaled to `stored` (width, height in its stored orientation) in one swscale
    pass, then turned upright by its rotation side data."""
    try:
        converted = reformatter.reformat(
            frame, width=stored[0], height=stored[1], format=pixel_format,
            interpolation="BILINEAR", threads=1,
        )  # fmt: skip
        image = converted.to_ndarray()
    except (av.error.FFmpegError, ValueError) as exc:
        raise SourceError(f"could not convert a frame: {_reason(exc)}") from None
    quarter_turns = _quarter_turns(frame)
    if quarter_turns:
        image = np.rot90(image, k=quarter_turns)
    return np.ascontiguousarray(image, dtype=np.uint8)


def _display_size(frame: VideoFrame) -> tuple[int, int]:
    """The width and height `frame` is shown at, upright (sideways frames swap them)."""
    if _quarter_turns(frame) % 2:
        return frame.height, frame.width
    return frame.width, frame.height


def _quarter_turns(frame: VideoFrame) -> int:
    """Counterclockwise quarter turns that show `frame` upright (0-3), from its display
    matrix (a phone clip stored sideways); angles between quarter turns are ignored, as
    OpenCV and players ignore them."""
    degrees = frame.rotation  # counterclockwise, [-180, 180]; 0 without a display matrix
    if not degrees or degrees % 90:
        return 0
    return (degrees // 90) % 4


def _video_stream(*, container: InputContainer, options: DecodeOptions) -> VideoStream:
    """The first video stream, its decoder set up as `options` say."""
    if not container.streams.video:
        raise SourceError("it has no video stream")
    stream = container.streams.video[0]
    context = stream.codec_context
    if context is None:
        raise SourceError(f"FFmpeg has no decoder for its video codec ({stream.codec_tag})")
    context.thread_count = options.threads
    if options.skip_loop_filter:
        context.options = {"skip_loop_filter": "all"}
    return stream


def ffmpeg_options(*, url: str, read_timeout_s: float) -> dict[str, str]:
    """The operator's options (`_capture_options`), plus FFmpeg's read timeouts unless the
    operator set them: `rw_timeout` bounds any protocol's reads (a local file's never wait),
    `timeout` the sockets of RTSP and HTTP."""
    options = _capture_options()
    microseconds = str(round(read_timeout_s * 1_000_000))
    options.setdefault("rw_timeout", microseconds)
    if takes_socket_timeouts(url):
        options.setdefault("timeout", microseconds)
    return options


def _capture_options() -> dict[str, str]:
    """FFmpeg options from OPENCV_FFMPEG_CAPTURE_OPTIONS (`key;value|key;value`), so one
    setting serves both decoders."""
    options: dict[str, str] = {}
    for item in os.environ.get(CAPTURE_OPTIONS_VARIABLE, "").split("|"):
        key, _, value = item.partition(";")
        if key.strip():
            options[key.strip()] = value.strip()
    return options


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the file name PyAV appends (a URL with its password)."""
    strerror = getattr(exc, "strerror", None)  # FFmpegError has one without being an OSError
    return str(strerror) if strerror else type(exc).__name__
