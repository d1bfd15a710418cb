"""Full-resolution pictures of handed-on frames, for snapshots: both decoders on real clips.

A reader converts each due frame straight to the network input; a camera with snapshots on
also hands on the frame's full-size picture, which must be that very frame, upright, at the
size the camera delivered, and must not change while the reader decodes on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from edge_facedet.config import CameraConfig
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.sources.decoders import DecodeOptions, Decoder, open_source
from edge_facedet.sources.dispatch import FrameDispatcher
from edge_facedet.sources.settings import ReaderSettings
from edge_facedet.sources.status import ReaderMetrics, StatusBoard
from tests.support.media import run_ffmpeg
from tests.support.paths import FACE_VIDEO

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from numpy.typing import NDArray

    from edge_facedet.frames import Frame, Picture
    from edge_facedet.sources.source import VideoSource

BOTH_DECODERS = pytest.mark.parametrize("decoder", list(Decoder))
INPUT_SIZE = (448, 448)
FACE_SIZE = (640, 480)  # FACE_VIDEO's width and height

_TURN_FILTERS = {90: "transpose=clock", 180: "hflip,vflip", 270: "transpose=cclock"}
"""The filter that stores an upright clip turned so that a display rotation of the key's
degrees shows it upright again (as tests/test_camera.py makes its phone clips)."""


def _open(clip: Path, decoder: Decoder) -> VideoSource:
    return open_source(
        url=str(clip), is_device=False, options=DecodeOptions(decoder=decoder),
        open_timeout_s=10.0, read_timeout_s=10.0, stall_timeout_s=10.0,
    )  # fmt: skip


def _picture_of_frame(source: VideoSource, index: int) -> Picture:
    """Grab up to frame `index` (from 0) and hand it on as a reader does: retrieve, then picture."""
    for _ in range(index + 1):
        assert source.grab()
    source.retrieve(size=INPUT_SIZE)
    return source.picture()


def _reference_frames(clip: Path, count: int) -> list[NDArray[np.uint8]]:
    """The first `count` frames of `clip` decoded in full by OpenCV, upright."""
    capture = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    try:
        images: list[NDArray[np.uint8]] = []
        for _ in range(count):
            grabbed, image = capture.read()
            assert grabbed
            images.append(np.asarray(image, dtype=np.uint8))
        return images
    finally:
        capture.release()


def _difference(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@BOTH_DECODERS
def test_picture_is_the_handed_on_frame_at_full_resolution(decoder: Decoder) -> None:
    references = _reference_frames(FACE_VIDEO, 31)
    source = _open(FACE_VIDEO, decoder)
    try:
        picture = _picture_of_frame(source, 30)
        image = picture.to_bgr()
    finally:
        source.release()
    assert (picture.width, picture.height) == FACE_SIZE
    assert image.shape == (FACE_SIZE[1], FACE_SIZE[0], 3)
    assert image.dtype == np.uint8
    assert image.flags.c_contiguous
    # Frame 30, not a neighbour: the clip moves enough that a frame off shows.
    assert _difference(image, references[30]) < 1.0
    assert _difference(image, references[20]) > 5.0


@pytest.fixture(scope="module")
def rotated_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], tuple[Path, Path]]:
    """`rotated_clip(degrees)`: a short upright clip and a copy stored turned, tagged to be
    shown upright (ffmpeg 5.1 writes the `rotate` tag as the display matrix)."""
    directory = tmp_path_factory.mktemp("pictures")
    upright = directory / "upright.mp4"
    run_ffmpeg(
        "-i", str(FACE_VIDEO), "-t", "0.2", "-an", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-b:v", "3M", output=upright,
    )  # fmt: skip
    made: dict[int, tuple[Path, Path]] = {}

    def make(degrees: int) -> tuple[Path, Path]:
        if degrees not in made:
            stored = directory / f"stored-{degrees}.mp4"
            run_ffmpeg(
                "-i", str(upright), "-vf", _TURN_FILTERS[degrees], "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-b:v", "3M", output=stored,
            )  # fmt: skip
            tagged = directory / f"tagged-{degrees}.mp4"
            run_ffmpeg(
                "-i", str(stored), "-c", "copy", "-metadata:s:v", f"rotate={degrees}",
                output=tagged,
            )  # fmt: skip
            made[degrees] = (upright, tagged)
        return made[degrees]

    return make


@BOTH_DECODERS
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_picture_of_a_clip_stored_turned_is_upright_at_its_display_size(
    rotated_clip: Callable[[int], tuple[Path, Path]], decoder: Decoder, degrees: int
) -> None:
    upright, tagged = rotated_clip(degrees)
    (reference,) = _reference_frames(upright, 1)
    source = _open(tagged, decoder)
    try:
        picture = _picture_of_frame(source, 0)
        image = picture.to_bgr()
    finally:
        source.release()
    assert (picture.width, picture.height) == FACE_SIZE
    upright_difference = _difference(image, reference)
    # Every other orientation of the same picture is far off: the comparison tells them apart.
    turned = [
        np.asarray(cv2.resize(np.ascontiguousarray(np.rot90(image, k)), FACE_SIZE), np.uint8)
        for k in (1, 2, 3)
    ]
    wrong_difference = min(_difference(other, reference) for other in turned)
    assert upright_difference < 4.0, (upright_difference, wrong_difference)
    assert wrong_difference > 3 * upright_difference, (upright_difference, wrong_difference)


@BOTH_DECODERS
def test_held_picture_is_unchanged_after_thirty_more_frames_and_a_release(
    decoder: Decoder,
) -> None:
    """A reader decodes on (and may reconnect) while a snapshot worker still holds a frame's
    picture: it must not see the later frames' pixels in it."""
    source = _open(FACE_VIDEO, decoder)
    picture = _picture_of_frame(source, 0)
    first = picture.to_bgr().copy()
    for _ in range(30):
        assert source.grab()
        source.retrieve(size=INPUT_SIZE)
    later = source.picture().to_bgr()
    assert _difference(later, first) > 5.0  # the clip moved on: a mix-up would show
    assert np.array_equal(picture.to_bgr(), first)
    source.release()
    assert np.array_equal(picture.to_bgr(), first)


@BOTH_DECODERS
def test_drawing_on_one_snapshot_cannot_mark_the_picture_for_the_next(decoder: Decoder) -> None:
    """One frame can hold the best face of two tracks: each snapshot takes `to_bgr()`, so what
    the first draws (boxes, blur) must not reach the second."""
    source = _open(FACE_VIDEO, decoder)
    try:
        picture = _picture_of_frame(source, 0)
        first = picture.to_bgr()
        before = first.copy()
        # Read-only refuses the drawing (the snapshot has to copy first); a fresh array takes it.
        with contextlib.suppress(ValueError):
            first[:] = 0
        assert np.array_equal(picture.to_bgr(), before)
    finally:
        source.release()


class _LatestSink:
    """A sink with room for every frame, keeping what is handed on."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def put(self, frame: Frame) -> None:
        self.frames.append(frame)

    def claim(self) -> bool:
        return True

    def wait_until_empty(self, timeout: float) -> bool:
        return True


def _hand_on_first_frames(*, camera: CameraConfig, count: int) -> list[Frame]:
    """The first `count` frames of `camera` grabbed and handed on by a real dispatcher."""
    settings = ReaderSettings.from_camera(camera, url=camera.url, input_size=INPUT_SIZE)
    sink = _LatestSink()
    dispatcher = FrameDispatcher(
        settings=settings, safe_url=camera.url, sink=sink, deliver=sink.put,
        board=StatusBoard(camera_id=camera.id, report=lambda _status: None),
        metrics=ReaderMetrics.for_camera(Metrics(), camera_id=camera.id),
        stop=threading.Event(), lossless=False,
    )  # fmt: skip
    source = _open(FACE_VIDEO, settings.decode.decoder)
    try:
        for _ in range(count):
            assert source.grab()
            assert dispatcher.dispatch_due(
                source=source, capture_time=datetime.now(timezone.utc),
                arrived=time.monotonic(), lag_s=0.0,
            )  # fmt: skip
    finally:
        source.release()
    return sink.frames


@BOTH_DECODERS
def test_a_camera_with_snapshots_on_hands_on_each_frame_with_its_picture(
    decoder: Decoder,
) -> None:
    camera = CameraConfig.model_validate(
        {"id": "door", "url": str(FACE_VIDEO), "decoder": decoder.value,
         "snapshots": {"mode": "crop"}, "motion": {"enabled": False}}
    )  # fmt: skip
    references = _reference_frames(FACE_VIDEO, 3)
    frames = _hand_on_first_frames(camera=camera, count=3)
    assert [frame.seq for frame in frames] == [0, 1, 2]
    for frame, reference in zip(frames, references, strict=True):
        assert frame.picture is not None
        assert (frame.picture.width, frame.picture.height) == (frame.width, frame.height)
        assert _difference(frame.picture.to_bgr(), reference) < 1.0


@BOTH_DECODERS
def test_a_camera_with_snapshots_off_hands_on_frames_without_a_picture(
    decoder: Decoder,
) -> None:
    # Motion gating off: every due frame is handed on (the gate has its own tests).
    camera = CameraConfig.model_validate(
        {"id": "door", "url": str(FACE_VIDEO), "decoder": decoder.value,
         "motion": {"enabled": False}}
    )  # fmt: skip
    assert not camera.snapshots.enabled  # off by default
    frames = _hand_on_first_frames(camera=camera, count=3)
    assert len(frames) == 3
    assert all(frame.picture is None for frame in frames)
    assert all(frame.image.shape == (*INPUT_SIZE[::-1], 3) for frame in frames)


def test_from_camera_keeps_pictures_exactly_when_snapshots_are_on() -> None:
    modes = {"off": False, "crop": True, "frame": True, "blurred_frame": True}
    for mode, kept in modes.items():
        camera = CameraConfig.model_validate(
            {"id": "door", "url": "/media/clip.mp4", "snapshots": {"mode": mode}}
        )
        settings = ReaderSettings.from_camera(camera, url=camera.url, input_size=INPUT_SIZE)
        assert settings.keep_picture is kept, mode
