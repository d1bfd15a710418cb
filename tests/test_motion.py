"""Motion detection on real footage: still scenes with sensor noise and H.264 artefacts stay
still, a lighting step recalibrates instead of firing, people walking in are motion, and ROI
and masks leave their motion out.

The pictures come through the real decoders' `gray()` (OpenCV and PyAV) from H.264 files:
the shared clip `one-by-one-person-detection.mp4` (a fixed camera on an empty room; the first
person walks in at frame 60 of 10 fps), and clips encoded here from one of its empty frames
with fresh Gaussian noise per frame, the way a sensor's noise reaches an encoder.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_facedet.config import MotionConfig, ServiceConfig
from edge_facedet.sources.motion import MotionDetector, MotionResult, MotionSettings
from edge_facedet.sources.opencv import OpenCvSource
from edge_facedet.sources.pyav import PyAvSource
from edge_facedet.sources.source import DecodeOptions, Decoder
from tests.support.media import run_ffmpeg
from tests.support.paths import MEDIA

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from numpy.typing import NDArray

    from edge_facedet.sources.source import VideoSource

ROOM = MEDIA / "sample-videos" / "one-by-one-person-detection.mp4"
ROOM_FPS = 10
PERSON_ENTERS = 60
"""The first frame of ROOM in which the first person is in view."""
DETECT_STEP = 2
"""Every 2nd frame of the 10 fps clip: a detect_fps of 5, the default."""
NOISE_SIGMA = 6.0
"""Grey levels of per-pixel noise, a camera's sensor in indoor light (visible grain)."""
LOW_LIGHT_NOISE_SIGMA = 20.0
"""Heavy grain, as in dim light at high gain: without the blur this is motion (tried)."""
CLIP_FRAMES = 60
LIGHT_STEP_AT = 30


def open_source(path: Path, decoder: Decoder) -> VideoSource:
    if decoder is Decoder.PYAV:
        return PyAvSource(
            url=str(path), options=DecodeOptions(decoder=decoder), read_timeout_s=10,
            stall_timeout_s=10,
        )  # fmt: skip
    return OpenCvSource(
        url=str(path), is_device=False, threads=1, open_timeout_s=10, read_timeout_s=10
    )


def grays(
    path: Path,
    *,
    decoder: Decoder = Decoder.OPENCV,
    step: int = 1,
    stop: int = 10**6,
    height: int = 120,
) -> Iterator[tuple[int, NDArray[np.uint8]]]:
    """(frame index, small grey picture) of every `step`th frame before `stop`."""
    source = open_source(path, decoder)
    try:
        index = 0
        while index < stop and source.grab():
            if index % step == 0:
                yield index, source.gray(height=height)
            index += 1
    finally:
        source.release()


def room_frame(index: int = 20) -> NDArray[np.uint8]:
    capture = cv2.VideoCapture(str(ROOM))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
    finally:
        capture.release()
    assert ok
    return np.asarray(image, dtype=np.uint8)


def encode(frames: list[NDArray[np.uint8]], target: Path) -> Path:
    """H.264 at a camera-like constant quality (blocking and ringing at CRF 28)."""
    height, width = frames[0].shape[:2]
    raw = target.with_suffix(".bgr")
    raw.write_bytes(b"".join(frame.tobytes() for frame in frames))
    run_ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", "5",
        "-i", str(raw), "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-g", "50",
        "-pix_fmt", "yuv420p",
        output=target,
    )  # fmt: skip
    return target


def noisy(
    base: NDArray[np.uint8],
    rng: np.random.Generator,
    *,
    gain: float = 1.0,
    sigma: float = NOISE_SIGMA,
) -> NDArray[np.uint8]:
    frame = base.astype(np.float32) * gain + rng.normal(0.0, sigma, base.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.fixture(
    scope="module", params=[NOISE_SIGMA, LOW_LIGHT_NOISE_SIGMA], ids=["noise6", "noise20"]
)
def still_clip(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    rng = np.random.default_rng(1)
    base = room_frame()
    frames = [noisy(base, rng, sigma=request.param) for _ in range(CLIP_FRAMES)]
    return encode(frames, tmp_path_factory.mktemp("motion") / "still.mp4")


@pytest.fixture(scope="module")
def lighting_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The still scene, 30 % brighter from frame LIGHT_STEP_AT on (a lamp, auto-exposure)."""
    rng = np.random.default_rng(2)
    base = room_frame()
    frames = [
        noisy(base, rng, gain=1.3 if index >= LIGHT_STEP_AT else 1.0)
        for index in range(CLIP_FRAMES)
    ]
    return encode(frames, tmp_path_factory.mktemp("motion") / "lighting.mp4")


def run(
    pictures: Iterator[tuple[int, NDArray[np.uint8]]], settings: MotionSettings | None = None
) -> dict[int, MotionResult]:
    detector = MotionDetector(settings=settings or MotionSettings(), frame_interval_s=0.2)
    return {index: detector.detect(gray) for index, gray in pictures}


@pytest.mark.parametrize("decoder", [Decoder.OPENCV, Decoder.PYAV])
def test_a_still_scene_with_sensor_noise_and_h264_artefacts_is_not_motion(
    still_clip: Path, decoder: Decoder
) -> None:
    results = run(grays(still_clip, decoder=decoder))
    after_calibration = [results[index] for index in sorted(results)[1:]]
    false_motion = sum(result.motion for result in after_calibration) / len(after_calibration)
    assert false_motion < 0.05, [round(result.changed, 4) for result in after_calibration]
    # The noise does get through the decoder: the picture is not simply the same each time.
    pictures = [gray for _, gray in grays(still_clip, decoder=decoder, stop=2)]
    assert np.any(pictures[0] != pictures[1])


@pytest.mark.parametrize("decoder", [Decoder.OPENCV, Decoder.PYAV])
def test_a_lighting_step_recalibrates_instead_of_firing(
    lighting_clip: Path, decoder: Decoder
) -> None:
    results = run(grays(lighting_clip, decoder=decoder))
    after_step = [results[index] for index in sorted(results) if index >= LIGHT_STEP_AT]
    assert sum(result.motion for result in after_step) <= 2
    assert any(result.recalibrated for result in after_step[:3])
    # Recalibrated: the brighter scene is the background now, still and quiet.
    assert not any(result.motion for result in after_step[3:])
    assert max(result.changed for result in after_step[3:]) < 0.01


def test_the_lighting_step_is_a_large_change_the_detector_would_otherwise_report(
    lighting_clip: Path,
) -> None:
    # Without recalibration (a share of 100 % required) the step is motion frame after frame
    # until the running average catches up: what recalibration saves.
    settings = MotionSettings(recalibrate_area=1.0)
    results = run(grays(lighting_clip), settings)
    fired = [index for index, result in results.items() if result.motion]
    assert len([index for index in fired if index >= LIGHT_STEP_AT]) >= 3


def test_a_person_walking_into_the_room_is_motion() -> None:
    results = run(grays(ROOM, step=DETECT_STEP, stop=PERSON_ENTERS + 40))
    empty = [index for index, result in results.items() if index < PERSON_ENTERS]
    walking = [index for index in results if PERSON_ENTERS <= index < PERSON_ENTERS + 30]
    assert not any(results[index].motion for index in empty[1:])
    # Every due frame while the person walks to the table (3 s) is motion.
    assert all(results[index].motion for index in walking), {
        index: round(results[index].changed, 4) for index in walking
    }


@pytest.mark.parametrize(
    ("settings", "fires"),
    [
        # The person walks in at x 0.25..0.67 of the frame; the window on the left is still.
        (MotionSettings(roi=(0.0, 0.0, 0.2, 1.0)), False),
        (MotionSettings(masks=(((0.2, 0.0), (1.0, 0.0), (1.0, 1.0), (0.2, 1.0)),)), False),
        # Controls: an ROI and a mask that leave the person in view.
        (MotionSettings(roi=(0.2, 0.0, 1.0, 1.0)), True),
        (MotionSettings(masks=(((0.0, 0.0), (0.2, 0.0), (0.2, 1.0), (0.0, 1.0)),)), True),
    ],
    ids=["roi-without-person", "mask-over-person", "roi-with-person", "mask-beside-person"],
)
def test_roi_and_masks_leave_out_the_motion_they_exclude(
    settings: MotionSettings, fires: bool
) -> None:
    results = run(grays(ROOM, step=DETECT_STEP, stop=PERSON_ENTERS + 30), settings)
    assert any(result.motion for result in results.values()) is fires


def test_motion_costs_a_small_fraction_of_a_millisecond(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pictures = [gray for _, gray in grays(ROOM, step=DETECT_STEP, stop=PERSON_ENTERS + 40)]
    masked = MotionSettings(
        roi=(0.05, 0.05, 0.95, 0.95), masks=(((0.0, 0.0), (0.2, 0.0), (0.2, 0.3)),)
    )
    for settings in (MotionSettings(), masked):
        detector = MotionDetector(settings=settings, frame_interval_s=0.2)
        started = time.thread_time()
        for gray in pictures:
            detector.detect(gray)
        per_call_ms = (time.thread_time() - started) / len(pictures) * 1000
        with capsys.disabled():
            print(f"\nmotion detect: {per_call_ms:.3f} ms CPU per 213x120 picture ({settings.roi})")
        # A fraction of the ~11 core-ms an inference costs; CPU time, so a loaded box does
        # not fail it.
        assert per_call_ms < 0.5


def small_gray_cost(path: Path, decoder: Decoder) -> float:
    """CPU ms per `gray(height=120)` call of `decoder`."""
    source = open_source(path, decoder)
    spent, calls = 0.0, 0
    try:
        while calls < 40 and source.grab():
            started = time.thread_time()
            source.gray(height=120)
            spent += time.thread_time() - started
            calls += 1
    finally:
        source.release()
    return spent / calls * 1000


def test_pyav_makes_the_grey_picture_without_a_full_size_conversion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pyav_ms = small_gray_cost(ROOM, Decoder.PYAV)
    opencv_ms = small_gray_cost(ROOM, Decoder.OPENCV)
    with capsys.disabled():
        print(f"\ngray(height=120) CPU ms: pyav {pyav_ms:.3f}, opencv {opencv_ms:.3f} (full BGR)")
    assert pyav_ms < opencv_ms


@pytest.mark.parametrize("decoder", [Decoder.OPENCV, Decoder.PYAV])
def test_the_grey_picture_is_small_upright_and_matches_the_frame(decoder: Decoder) -> None:
    source = open_source(ROOM, decoder)
    try:
        assert source.grab()
        gray = source.gray(height=120)
        network, width, height = source.retrieve(size=(448, 448))
    finally:
        source.release()
    assert gray.shape == (120, round(120 * width / height))
    expected = cv2.cvtColor(cv2.resize(room_frame(0), gray.shape[::-1]), cv2.COLOR_BGR2GRAY)
    assert np.abs(gray.astype(int) - expected).mean() < 4
    assert network.shape == (448, 448, 3)


def test_opencv_converts_a_due_frame_once_for_gray_and_retrieve() -> None:
    source = OpenCvSource(
        url=str(ROOM), is_device=False, threads=1, open_timeout_s=10, read_timeout_s=10
    )
    calls = 0
    capture = source._capture
    real_retrieve: Callable[..., object] = capture.retrieve

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(capture, name)

        def retrieve(self) -> object:
            nonlocal calls
            calls += 1
            return real_retrieve()

    source._capture = Counting()  # type: ignore[assignment]
    try:
        assert source.grab()
        source.gray(height=120)
        source.retrieve(size=(448, 448))
        assert calls == 1
        assert source.grab()
        source.retrieve(size=(448, 448))
        assert calls == 2  # a new grab is converted anew
    finally:
        source.release()


# -- configuration ------------------------------------------------------------------------


def config(**motion: object) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "defaults": {"motion": {"recheck_interval_s": 4}},
            "cameras": [
                {"id": "door", "url": "/srv/door.mp4", "motion": motion},
            ],
        }
    )


def test_a_cameras_motion_keys_merge_over_the_defaults() -> None:
    camera = config(threshold=40).cameras[0]
    assert (camera.motion.recheck_interval_s, camera.motion.threshold) == (4, 40)
    assert camera.motion.enabled is MotionConfig().enabled


@pytest.mark.parametrize(
    ("motion", "message"),
    [
        ({"masks": [[[0.1, 0.1], [0.2, 0.2]]]}, "at least 3"),
        ({"masks": [[[0.1, 0.1], [0.2, 1.2], [0.3, 0.1]]]}, "less than or equal to 1"),
        ({"min_area": 0.3, "recalibrate_area": 0.2}, "must be > min_area"),
        ({"recheck_interval_s": 30}, "must be <= publish.heartbeat_s"),
    ],
)
def test_bad_motion_settings_are_refused(motion: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**motion)


def test_long_rechecks_are_fine_without_on_change_heartbeats() -> None:
    camera = ServiceConfig.model_validate(
        {
            "cameras": [
                {
                    "id": "door",
                    "url": "/srv/door.mp4",
                    "publish": {"policy": "on_faces"},
                    "motion": {"recheck_interval_s": 30},
                }
            ]
        }
    ).cameras[0]
    assert camera.motion.recheck_interval_s == 30
