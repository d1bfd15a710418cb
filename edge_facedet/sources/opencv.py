"""The `opencv` decoder: OpenCV's FFmpeg backend for streams and files, V4L2 for devices.

Frames come upright: the FFmpeg backend applies the stream's display matrix (quarter turns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import cv2

from edge_facedet.frames import ArrayPicture
from edge_facedet.sources.source import SourceError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.frames import Picture


class OpenCvSource:
    """A `VideoSource` read through `cv2.VideoCapture`."""

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
            # OpenCV refuse the open), so a device gets none; see the reader's docstring.
            device: int | str = int(url) if url.isdigit() else url
            capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                round(open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                round(read_timeout_s * 1000),
                # Each FFmpeg capture would otherwise start one decoder thread per core;
                # with many cameras those threads thrash the cores (see docs/benchmarks.md).
                cv2.CAP_PROP_N_THREADS,
                threads,
            ]
            capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError("OpenCV could not open it")
        if not is_device:
            # Turn frames upright by the stream's display matrix (a phone clip stored
            # sideways), as the pyav decoder does: OpenCV's default today, said explicitly
            # so that a changed default cannot turn one decoder's frames sideways. Not an
            # open parameter: OpenCV refuses the open with it.
            capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        self._capture = capture
        # The full-size BGR frame `retrieve` or `gray` converted anyway: OpenCV's Python
        # binding returns a new array each time (the backend's own buffer is copied out), so
        # a picture can keep it without a copy while later frames are retrieved.
        self._image: NDArray[np.uint8] | None = None

    def grab(self) -> bool:
        # Dropped here, so a camera that takes no pictures holds no full-size frame between
        # due frames (its peak memory is what it was).
        self._image = None
        return bool(self._capture.grab())

    def retrieve(self, *, size: tuple[int, int]) -> tuple[NDArray[np.uint8], int, int]:
        image = self._bgr()
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return cast("NDArray[np.uint8]", resized), int(image.shape[1]), int(image.shape[0])

    def gray(self, *, height: int) -> NDArray[np.uint8]:
        image = self._bgr()
        width = max(1, round(height * image.shape[1] / image.shape[0]))
        # Scaled first, converted after: the colour conversion then touches a few thousand
        # pixels instead of the whole frame. Bilinear, not area averaging, which costs more
        # than the rest of motion detection together at a non-integer ratio; the detector's
        # blur does the averaging of sensor noise instead.
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return cast("NDArray[np.uint8]", cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))

    def _bgr(self) -> NDArray[np.uint8]:
        """The last grabbed frame as full-size BGR, converted once per grab (`gray` and then
        `retrieve` of one due frame share the conversion)."""
        if self._image is not None:
            return self._image
        retrieved, image = self._capture.retrieve()
        if not retrieved or image is None or image.ndim != 3 or image.size == 0:
            raise SourceError("could not decode a frame")
        self._image = cast("NDArray[np.uint8]", image)
        return self._image

    def picture(self) -> Picture:
        image = self._image
        if image is None:
            raise SourceError("no frame was retrieved")
        # One picture can serve several snapshots (two faces in one frame), and `to_bgr` hands
        # out this very array: read-only, so that drawing on one cannot mark another.
        image.flags.writeable = False
        return ArrayPicture(array=image)

    def stream_time_s(self) -> float:
        return float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0

    def fps(self) -> float:
        return float(self._capture.get(cv2.CAP_PROP_FPS))

    def rewind(self) -> bool:
        return bool(self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        self._capture.release()


def keep_opencv_in_reader_threads() -> None:
    """Make OpenCV's resize run in the calling reader thread, without its worker pool.

    Each reader already runs in its own thread, and with many cameras every core is busy;
    OpenCV's pool (one worker per core, spinning before it sleeps) only adds threads that
    compete with the readers and the detector (measured: see docs/benchmarks.md, "OpenCV's
    worker pool off"). Process-wide, so the service calls it once.
    """
    cv2.setNumThreads(1)
