"""Video sources: the demuxer and decoder a camera reader pulls its frames through.

`open_source` opens a URL with one of two decoders behind one small interface, `VideoSource`:

- `opencv`: OpenCV's FFmpeg backend for streams and files, V4L2 for devices. The default.
- `pyav`: FFmpeg through PyAV, for streams and files. It can decode less than every frame:
  `keyframes_only` (live streams) decodes only the stream's keyframes (0.5 instead of 25
  decodes per second with a 2 s GOP), and `skip_loop_filter` skips H.264/HEVC deblocking
  (measured: -16 % decoding CPU on 12 live 720p streams; pixels differ from a full decode,
  38.8 dB PSNR, 96.6 % of detections matched). A due frame is converted and resized in one
  swscale pass (0.58 ms of CPU for 720p to 448x448 BGR, against 0.97 for OpenCV's BGR
  conversion then resize). Network reads are bounded by FFmpeg's socket timeouts.

A source raises `SourceError` with a one-line reason that never contains the URL, so the
reader can add the redacted one.
"""

from __future__ import annotations

import enum
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from edge_facedet.sources.urls import takes_socket_timeouts

if TYPE_CHECKING:
    from collections.abc import Iterator

    from av.container import InputContainer
    from av.packet import Packet
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream
    from numpy.typing import NDArray

_CAPTURE_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def prefer_rtsp_over_tcp() -> None:
    """Make FFmpeg read RTSP over TCP unless the operator chose otherwise.

    RTSP over UDP loses packets (smeared frames) on busy networks and is blocked by most NATs
    and firewalls; TCP is what cameras behind routers need. OpenCV reads this variable on
    every FFmpeg open and the PyAV source reads the same one. Done on import, for every user
    of this module.
    """
    os.environ.setdefault(_CAPTURE_OPTIONS_VARIABLE, "rtsp_transport;tcp")


prefer_rtsp_over_tcp()

"""Where FFmpeg's `timeout` option is the socket I/O timeout in microseconds (for RTMP it
would mean "listen for a connection", for UDP something else again)."""
_MAX_UNDECODABLE_PACKETS = 64
"""Packets the decoder rejects in a row before a grab fails (OpenCV's own loop skips such
packets too): a damaged spot is skipped, a stream of garbage is a fault."""


class Decoder(str, enum.Enum):
    """Which library demuxes and decodes a camera (`enum.StrEnum` needs 3.11)."""

    OPENCV = "opencv"
    PYAV = "pyav"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeOptions:
    """How a camera's frames are decoded (see the module docstring for the trade-offs)."""

    decoder: Decoder = Decoder.OPENCV
    threads: int = 1
    """FFmpeg decoder threads (0: FFmpeg's choice, one per core)."""
    keyframes_only: bool = False
    skip_loop_filter: bool = False

    def __post_init__(self) -> None:
        if self.decoder is Decoder.OPENCV and (self.keyframes_only or self.skip_loop_filter):
            raise ValueError("keyframes_only and skip_loop_filter need the pyav decoder")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


class SourceError(Exception):
    """A source could not be opened or read; the message names no URL."""


class VideoSource(Protocol):
    """An opened camera: frames are grabbed (decoded) one by one, converted only on demand."""

    def grab(self) -> bool:
        """Demux and decode the next frame; False when none came (failure or end of file)."""
        ...

    def retrieve(self, *, size: tuple[int, int]) -> tuple[NDArray[np.uint8], int, int]:
        """The last grabbed frame as BGR resized to `size`, with its original width, height."""
        ...

    def stream_time_s(self) -> float:
        """The last grabbed frame's timestamp on the stream's clock; NaN if it has none."""
        ...

    def fps(self) -> float:
        """The frame rate the container declares; NaN if it declares none."""
        ...

    def rewind(self) -> bool:
        """Go back to the first frame of a file; False if the source cannot seek."""
        ...

    def release(self) -> None: ...


def open_source(
    *,
    url: str,
    is_device: bool,
    options: DecodeOptions,
    open_timeout_s: float,
    read_timeout_s: float,
    stall_timeout_s: float,
) -> VideoSource:
    """Open `url`; raises `SourceError` (no URL in it) when it cannot be opened.

    A grab that reads packets for `stall_timeout_s` without a frame fails (PyAV; OpenCV bounds
    its own loop by packet count).
    """
    if options.decoder is Decoder.PYAV:
        if is_device:
            raise SourceError("the pyav decoder reads streams and files, not devices")
        return _PyAvSource(
            url=url, options=options, read_timeout_s=read_timeout_s,
            stall_timeout_s=stall_timeout_s,
        )  # fmt: skip
    return _OpenCvSource(
        url=url,
        is_device=is_device,
        threads=options.threads,
        open_timeout_s=open_timeout_s,
        read_timeout_s=read_timeout_s,
    )


class _OpenCvSource:
    def __init__(
        self,
        *,
        url: str,
        is_device: bool,
        threads: int,
        open_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        if is_device:
            # The V4L2 backend rejects the FFmpeg-only parameters (unused parameters make
            # OpenCV refuse the open), so a device gets none; see camera.py's docstring.
            device: int | str = int(url) if url.isdigit() else url
            capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(read_timeout_s * 1000),
                # Each FFmpeg capture would otherwise start one decoder thread per core;
                # with many cameras those threads thrash the cores (DESIGN.md).
                cv2.CAP_PROP_N_THREADS,
                threads,
            ]
            capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError("OpenCV could not open it")
        self._capture = capture

    def grab(self) -> bool:
        return bool(self._capture.grab())

    def retrieve(self, *, size: tuple[int, int]) -> tuple[NDArray[np.uint8], int, int]:
        retrieved, image = self._capture.retrieve()
        if not retrieved or image is None or image.ndim != 3 or image.size == 0:
            raise SourceError("could not decode a frame")
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return cast("NDArray[np.uint8]", resized), int(image.shape[1]), int(image.shape[0])

    def stream_time_s(self) -> float:
        return float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0

    def fps(self) -> float:
        return float(self._capture.get(cv2.CAP_PROP_FPS))

    def rewind(self) -> bool:
        return bool(self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        self._capture.release()


class _PyAvSource:
    def __init__(
        self, *, url: str, options: DecodeOptions, read_timeout_s: float, stall_timeout_s: float
    ) -> None:
        try:
            # No PyAV `timeout`: its interrupt callback takes the GIL at every I/O check of
            # FFmpeg's (hundreds per second per stream). FFmpeg's socket timeouts bound
            # the reads instead, and the reader's probe bounds the connect.
            container = av.open(
                url,
                options=_ffmpeg_options(url=url, read_timeout_s=read_timeout_s),
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
        # build one per call with a worker thread per core (measured: twice the CPU).
        self._reformatter = VideoReformatter()

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
        try:
            # One swscale pass converts and resizes, never making a full-size BGR copy.
            converted = self._reformatter.reformat(
                frame, width=size[0], height=size[1], format="bgr24",
                interpolation="BILINEAR", threads=1,
            )  # fmt: skip
            image = converted.to_ndarray()
        except (av.error.FFmpegError, ValueError) as exc:
            raise SourceError(f"could not convert a frame: {_reason(exc)}") from None
        return np.ascontiguousarray(image, dtype=np.uint8), frame.width, frame.height

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


def _ffmpeg_options(*, url: str, read_timeout_s: float) -> dict[str, str]:
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
    for item in os.environ.get(_CAPTURE_OPTIONS_VARIABLE, "").split("|"):
        key, _, value = item.partition(";")
        if key.strip():
            options[key.strip()] = value.strip()
    return options


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the file name PyAV appends (a URL with its password)."""
    strerror = getattr(exc, "strerror", None)  # FFmpegError has one without being an OSError
    return str(strerror) if strerror else type(exc).__name__
