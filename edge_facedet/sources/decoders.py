"""Video sources: the demuxer and decoder a camera reader pulls its frames through.

`open_source` opens a URL with one of two decoders behind one small interface, `VideoSource`
(edge_facedet.sources.source):

- `opencv` (edge_facedet.sources.opencv): OpenCV's FFmpeg backend for streams and files,
  V4L2 for devices. The default.
- `pyav` (edge_facedet.sources.pyav): FFmpeg through PyAV, for streams and files. It can
  decode less than every frame: `keyframes_only` (live streams) decodes only the stream's
  keyframes, a small fraction of the frames, and `skip_loop_filter` skips H.264/HEVC
  deblocking for less decoding CPU, with pixels close to but not equal to a full decode. A
  due frame is converted and resized in one swscale pass, cheaper than OpenCV's conversion
  then resize. Network reads are bounded by FFmpeg's socket timeouts. The figures behind
  these trade-offs are in docs/benchmarks.md.

A source raises `SourceError` with a one-line reason that never contains the URL, so the
reader can add the redacted one.
"""

from __future__ import annotations

import os

from edge_facedet.sources.opencv import OpenCvSource
from edge_facedet.sources.source import (
    CAPTURE_OPTIONS_VARIABLE,
    DecodeOptions,
    Decoder,
    SourceError,
    VideoSource,
)

__all__ = [
    "DecodeOptions",
    "Decoder",
    "SourceError",
    "VideoSource",
    "open_source",
    "prefer_rtsp_over_tcp",
]


def prefer_rtsp_over_tcp() -> None:
    """Make FFmpeg read RTSP over TCP unless the operator chose otherwise.

    RTSP over UDP loses packets (smeared frames) on busy networks and is blocked by most NATs
    and firewalls; TCP is what cameras behind routers need. OpenCV reads this variable on
    every FFmpeg open and the PyAV source reads the same one. It changes the process's
    environment, so the service calls it once at start rather than on import.
    """
    os.environ.setdefault(CAPTURE_OPTIONS_VARIABLE, "rtsp_transport;tcp")


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
        # Imported on first use: PyAV costs 17 MB resident in a service that never uses it.
        from edge_facedet.sources.pyav import PyAvSource  # noqa: PLC0415

        return PyAvSource(
            url=url, options=options, read_timeout_s=read_timeout_s,
            stall_timeout_s=stall_timeout_s,
        )  # fmt: skip
    return OpenCvSource(
        url=url,
        is_device=is_device,
        threads=options.threads,
        open_timeout_s=open_timeout_s,
        read_timeout_s=read_timeout_s,
    )
