"""StreamLag: a reader's lag behind a live stream, from arrival times and stream timestamps."""

from __future__ import annotations

import pytest

from edge_facedet.sources.lag import StreamLag
from edge_facedet.sources.urls import has_live_clock

FRAME_S = 0.04  # 25 fps


def feed(
    lag: StreamLag, *, frames: int, start: int = 0, read_s: float = FRAME_S,
    stream_start_s: float = 100.0, arrival_start_s: float = 5000.0,
) -> list[float]:  # fmt: skip
    """Frames `start`.. of a 25 fps stream, read one every `read_s` (slower than 0.04: behind)."""
    return [
        lag.update(arrival_s=arrival_start_s + i * read_s, stream_s=stream_start_s + i * FRAME_S)
        for i in range(start, start + frames)
    ]


def test_a_reader_that_keeps_up_has_no_lag_whatever_the_network_delay() -> None:
    lag = StreamLag()
    # Arrival jitter of up to 30 ms on top of a constant network delay.
    values = [
        lag.update(arrival_s=10.0 + i * FRAME_S + (i * 7 % 4) * 0.01, stream_s=1.0 + i * FRAME_S)
        for i in range(500)
    ]
    assert max(values) == pytest.approx(0.03)


def test_a_slow_reader_lags_by_exactly_the_time_it_fell_behind() -> None:
    lag = StreamLag()
    feed(lag, frames=50)  # caught up for 2 s
    # Then it reads one frame every 50 ms of a 40 ms stream: 10 ms more behind per frame.
    values = feed(lag, frames=100, read_s=0.05, arrival_start_s=5000.0 + 50 * FRAME_S,
                  stream_start_s=100.0 + 50 * FRAME_S)  # fmt: skip
    assert values[-1] == pytest.approx(99 * 0.01)
    assert values == sorted(values)


def test_clock_drift_between_camera_and_host_does_not_accumulate() -> None:
    lag = StreamLag(window_s=30.0)
    # The camera's clock runs 100 ppm slow: after an hour the offset has grown by 0.36 s.
    values = feed(lag, frames=90_000, read_s=FRAME_S * 1.0001)
    assert values[-1] < 0.005


def test_timestamps_that_restart_are_measured_afresh() -> None:
    lag = StreamLag()
    feed(lag, frames=100)
    # The camera rebooted inside the session: its clock starts again near zero.
    after = feed(lag, frames=50, stream_start_s=0.5, arrival_start_s=6000.0)
    assert max(after) == pytest.approx(0.0)


def test_a_stream_clock_that_paused_fades_within_the_window() -> None:
    lag = StreamLag(window_s=30.0)
    feed(lag, frames=100)
    # The stream's clock stands still for 2 s while frames keep coming (an encoder hiccup),
    # then runs on from where it stopped: the offset rises by 2 s for good, which is not the
    # reader's lag. It counts as lag until the window has moved past the old offsets.
    frozen = [lag.update(arrival_s=5000.0 + i * FRAME_S, stream_s=100.0 + 99 * FRAME_S)
              for i in range(100, 150)]  # fmt: skip
    after = feed(lag, frames=1000, start=150, stream_start_s=100.0 - 50 * FRAME_S)
    assert frozen == [0.0] * 50
    assert after[0] == pytest.approx(2.0)
    assert after[-1] == pytest.approx(0.0)


@pytest.mark.parametrize("stream_s", [0.0, -1.0, float("nan"), float("inf")])
def test_frames_without_usable_timestamps_have_no_lag(stream_s: float) -> None:
    lag = StreamLag()
    assert [lag.update(arrival_s=float(i), stream_s=stream_s) for i in range(10)] == [0.0] * 10


def test_a_stream_clock_that_does_not_advance_is_not_read_as_lag() -> None:
    lag = StreamLag()
    assert lag.update(arrival_s=1.0, stream_s=3.0) == 0.0
    # Some sources repeat one timestamp (MJPEG over HTTP): arrival grows, the stream does not.
    assert [lag.update(arrival_s=1.0 + i, stream_s=3.0) for i in range(1, 10)] == [0.0] * 9


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        StreamLag(window_s=0)


@pytest.mark.parametrize(
    ("url", "measured"),
    [
        ("rtsp://user:pw@cam/stream1", True),
        ("RTSPS://cam:322/live", True),
        ("rtmp://cam/live/stream", True),
        ("tcp://cam:9000", True),
        ("udp://239.0.0.1:1234", True),
        # MJPEG's timestamps are often a frame count at an assumed rate; HLS comes in bursts.
        ("http://cam/mjpg/video.mjpg", False),
        ("https://cam/live.m3u8", False),
        ("/srv/clips/lobby.mp4", False),
        ("file:///srv/clips/lobby.mp4", False),
        ("/dev/video0", False),
        ("0", False),
    ],
)
def test_lag_is_measured_only_where_timestamps_are_a_live_media_clock(
    url: str, measured: bool
) -> None:
    assert has_live_clock(url) is measured
