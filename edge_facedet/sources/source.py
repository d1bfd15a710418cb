"""The interface a camera reader pulls its frames through, whichever library decodes them.

`Decoder` names the library, `DecodeOptions` says how it decodes, `VideoSource` is what an
opened camera offers, and `SourceError` is how opening or reading one fails. The two
implementations are in `edge_facedet.sources.opencv` and `edge_facedet.sources.pyav`;
`edge_facedet.sources.decoders.open_source` picks one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.frames import Picture

__all__ = ["CAPTURE_OPTIONS_VARIABLE", "DecodeOptions", "Decoder", "SourceError", "VideoSource"]

CAPTURE_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
"""FFmpeg options (`key;value|key;value`) that OpenCV reads on every FFmpeg open; the PyAV
source reads the same variable, so one setting serves both decoders."""


class Decoder(str, enum.Enum):
    """Which library demuxes and decodes a camera (`enum.StrEnum` needs 3.11)."""

    OPENCV = "opencv"
    PYAV = "pyav"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeOptions:
    """How a camera's frames are decoded (edge_facedet.sources.decoders has the trade-offs).

    Which cameras may use `keyframes_only` is the config's rule; this only refuses the
    options its decoder would silently ignore.
    """

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

    def gray(self, *, height: int) -> NDArray[np.uint8]:
        """The last grabbed frame as a small grey picture `height` pixels high (the width by
        the upright frame's aspect), upright; for motion detection.

        As cheap as the decoder allows: PyAV scales the luma plane directly, OpenCV (which only
        gives full-size BGR) converts once and keeps that BGR frame, so a following `retrieve`
        of the same frame does not convert it again.
        """
        ...

    def picture(self) -> Picture:
        """The last retrieved frame at full resolution, upright; valid after `retrieve` until
        the next `grab`.

        Cheap (no conversion, no copy), and asked for only by readers of cameras with
        snapshots on, so that other cameras pay nothing; the picture outlives later grabs.
        """
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
