"""ReaderSettings and its value objects: built from a camera's config, checked on creation."""

from __future__ import annotations

import dataclasses

import pytest

from edge_facedet.config import CameraConfig
from edge_facedet.sources.decoders import DecodeOptions, Decoder
from edge_facedet.sources.gate import GateSettings
from edge_facedet.sources.motion import MotionSettings
from edge_facedet.sources.settings import ReaderSettings, ReconnectPolicy, StreamTimeouts
from edge_facedet.sources.urls import SourceKind

SECRET = "S3ttingsSecret"  # noqa: S105 - a fake credential the tests hunt for


def test_from_camera_maps_every_reader_field_of_the_config() -> None:
    camera = CameraConfig.model_validate(
        {
            "id": "door", "url": "rtsp://cam.local/main", "detect_fps": 3.0,
            "decoder": "pyav", "decoder_threads": 2, "keyframes_only": True,
            "skip_loop_filter": True, "open_timeout_s": 4.0, "read_timeout_s": 5.0,
            "stall_timeout_s": 6.0, "reconnect_initial_s": 2.0, "reconnect_max_s": 9.0,
            "reader_nice": 3, "max_lag_s": 1.5,
            "roi": {"x_min": 0.1, "y_min": 0.2, "x_max": 0.9, "y_max": 1.0},
            "motion": {"recheck_interval_s": 4.0, "threshold": 30, "min_area": 0.01,
                       "recalibrate_area": 0.4, "background_s": 3.0, "height_px": 144,
                       "masks": [[[0.0, 0.0], [0.2, 0.0], [0.2, 0.3]]]},
        }
    )  # fmt: skip
    url = f"rtsp://admin:{SECRET}@cam.local/sub"
    settings = ReaderSettings.from_camera(camera, url=url, input_size=(448, 256), detect_phase=0.25)
    assert settings == ReaderSettings(
        camera_id="door",
        url=url,
        detect_fps=3.0,
        input_size=(448, 256),
        detect_phase=0.25,
        loop=False,
        realtime=True,
        decode=DecodeOptions(
            decoder=Decoder.PYAV, threads=2, keyframes_only=True, skip_loop_filter=True
        ),
        nice=3,
        max_lag_s=1.5,
        timeouts=StreamTimeouts(open_s=4.0, read_s=5.0, stall_s=6.0),
        reconnect=ReconnectPolicy(initial_s=2.0, max_s=9.0),
        gate=GateSettings(
            recheck_interval_s=4.0,
            motion=MotionSettings(
                threshold=30, min_area=0.01, recalibrate_area=0.4, background_s=3.0,
                height_px=144, roi=(0.1, 0.2, 0.9, 1.0),
                masks=(((0.0, 0.0), (0.2, 0.0), (0.2, 0.3)),),
            ),
        ),
    )  # fmt: skip
    assert settings.kind is SourceKind.NETWORK
    assert SECRET not in repr(settings)  # the URL, credentials and all, stays out of reprs


def test_from_camera_takes_a_file_cameras_loop_and_pace() -> None:
    camera = CameraConfig.model_validate(
        {"id": "clip", "url": "/media/clip.mp4", "loop": False, "realtime": False}
    )
    settings = ReaderSettings.from_camera(camera, url=camera.url, input_size=(448, 448))
    assert (settings.loop, settings.realtime, settings.detect_phase) == (False, False, 0.0)
    assert settings.kind is SourceKind.FILE
    assert settings.decode == DecodeOptions()


def test_a_camera_with_motion_gating_off_gets_no_gate() -> None:
    camera = CameraConfig.model_validate(
        {"id": "clip", "url": "/media/clip.mp4", "motion": {"enabled": False}}
    )
    assert ReaderSettings.from_camera(camera, url=camera.url, input_size=(448, 448)).gate is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"detect_fps": 0.0}, "camera cam: detect_fps must be > 0"),
        ({"detect_phase": 1.0}, r"camera cam: detect_phase must be in \[0, 1\)"),
        ({"max_lag_s": 0.0}, "camera cam: max_lag_s must be > 0"),
        ({"input_size": (0, 448)}, "camera cam: input_size must be positive"),
    ],
)
def test_settings_out_of_range_are_refused(change: dict[str, object], message: str) -> None:
    valid = ReaderSettings(camera_id="cam", url="0", detect_fps=5.0, input_size=(448, 448))
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(valid, **change)  # type: ignore[arg-type]


def test_timeouts_and_reconnect_policy_check_their_values() -> None:
    with pytest.raises(ValueError, match="stall_s must be > 0"):
        StreamTimeouts(stall_s=0.0)
    with pytest.raises(ValueError, match="backoff needs 0 < base <= cap"):
        ReconnectPolicy(initial_s=5.0, max_s=1.0)


def test_the_reconnect_policy_never_gives_up_and_backs_off_within_its_caps() -> None:
    policy = ReconnectPolicy(initial_s=0.5, max_s=2.0)
    assert not any(policy.gives_up(attempts=n) for n in (0, 1, 10, 10_000))
    backoff = policy.backoff()
    delays = [backoff.next_delay() for _ in range(8)]
    assert all(0.0 <= d <= cap for d, cap in zip(delays, [0.5, 1.0, *[2.0] * 6], strict=True))
    assert policy.backoff() is not backoff  # one per reader
