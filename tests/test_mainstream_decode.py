"""Main-stream snapshots on a real H.264 stream, no network: decoding once per GOP, the
frame of the face's moment on either clock, keyframes that show a later moment, and the
view check's patience with a damaged first picture.

The stream is made here with PyAV's libx264: a textured scene with a bright square that
moves 4 px per frame, so the square's position in a picture tells which frame it is. Its
packets go into a `PacketRing` as the main-stream reader would put them, arriving at 25 fps
from 1000 s (plus `delay_s`); the substream picture of frame i is the scene drawn at half
the size.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest

from edge_facedet.config.mainstream import MainStreamConfig
from edge_facedet.config.snapshots import SnapshotConfig, SnapshotMode
from edge_facedet.frames import ArrayPicture
from edge_facedet.outputs.snapshots.fov import (
    FOV_MIN_SIMILARITY,
    similarity,
    small_gray,
    view_match,
)
from edge_facedet.outputs.snapshots.mainframe import (
    MainPicture,
    MainStreamMissError,
    MainStreams,
)
from edge_facedet.outputs.snapshots.viewcheck import VIEW_CHECKS, ViewCheck
from edge_facedet.outputs.snapshots.worker import (
    MAIN_BACKLOG,
    SnapshotJob,
    SnapshotResult,
    SnapshotWorker,
)
from edge_facedet.sources.packetring import PacketRing, StreamInfo, Window

FPS = 25
GOP = 25
FRAMES = 75
WIDTH, HEIGHT = 320, 176
SQUARE = 16


def scene(index: int, *, scale: int = 1) -> np.ndarray:
    texture = np.random.default_rng(7).integers(0, 120, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image = texture.copy()
    left = 8 + 4 * index
    image[80 : 80 + SQUARE, left : left + SQUARE] = 255
    return image[::scale, ::scale].copy()


def frame_of(image: np.ndarray) -> int:
    """Which frame a (main) picture shows: where its square is."""
    columns = np.flatnonzero((image.min(axis=2) > 200).sum(axis=0) > SQUARE // 2)
    return round((int(columns[0]) - 8) / 4)


def encode(*, bframes: int) -> tuple[StreamInfo, list[av.Packet]]:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, FPS), Fraction(FPS, 1)
    encoder.gop_size, encoder.max_b_frames = GOP, bframes
    encoder.options = {"preset": "ultrafast", "keyint_min": str(GOP), "sc_threshold": "0"}
    if bframes:
        encoder.options = {**encoder.options, "bframes": str(bframes), "b-adapt": "0"}
    packets = []
    for index in range(FRAMES):
        frame = av.VideoFrame.from_ndarray(scene(index), format="bgr24").reformat(format="yuv420p")
        frame.pts = index
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    info = StreamInfo(
        connection=1,
        codec="h264",
        extradata=bytes(encoder.extradata) if encoder.extradata else None,
        width=WIDTH,
        height=HEIGHT,
        time_base=1 / FPS,
    )
    return info, packets


def ring_of(info: StreamInfo, packets: list[av.Packet], *, delay_s: float = 0.0) -> PacketRing:
    ring = PacketRing(max_bytes=1 << 30, max_seconds=60.0)
    ring.reset(info)
    for packet in sorted(packets, key=lambda p: p.dts):
        ring.append(
            data=bytes(packet),
            pts=packet.pts,
            dts=packet.dts,
            keyframe=packet.is_keyframe,
            arrival=1000.0 + delay_s + packet.dts / FPS,
        )
    return ring


@dataclass
class Picture:
    """A substream picture, with the RTCP time a pyav reader gives it."""

    array: np.ndarray
    wall_time: float | None = None

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    def to_bgr(self) -> np.ndarray:
        return self.array


class Watcher:
    def __init__(self) -> None:
        self.results: list[str] = []

    def snapshot(self, camera_id: str, result: str) -> None:
        self.results.append(result)

    def offset(self, camera_id: str, seconds: float) -> None: ...

    def latency(self, camera_id: str, seconds: float) -> None: ...


def streams(ring: PacketRing, *, watcher: Watcher | None = None, **settings: Any) -> MainStreams:
    config = MainStreamConfig(max_wait_s=0.0, **settings)  # every packet is there already
    return MainStreams(cameras={"cam": (ring, config)}, finder=None, watcher=watcher or Watcher())


def take(main: MainStreams, index: int, *, wall_time: float | None = None) -> MainPicture:
    moment = 1000.0 + index / FPS
    ref = main.attach("cam", moment=moment)
    assert ref is not None
    box = ((8 + 4 * index) / WIDTH, 80 / HEIGHT, (24 + 4 * index) / WIDTH, 96 / HEIGHT)
    picture: Any = Picture(scene(index, scale=2), wall_time=wall_time)
    return main.take("cam", ref=ref, detected=picture, boxes_norm=(box,))


@pytest.mark.parametrize("bframes", [0, 2])
def test_snapshots_of_one_gop_share_one_decoding_pass(bframes: int) -> None:
    info, packets = encode(bframes=bframes)
    main = streams(ring_of(info, packets))
    first = take(main, 32)  # GOP 25..49
    assert frame_of(first.picture.to_bgr()) == 32
    assert first.restarted
    later = take(main, 38)
    assert frame_of(later.picture.to_bgr()) == 38
    # Went on from where the first stopped: a few frames, not the GOP from its keyframe.
    assert not later.restarted
    assert later.decoded < 38 - 25
    # A face of an earlier moment (a track's end) takes the camera's second decoder...
    past = take(main, 12)
    assert frame_of(past.picture.to_bgr()) == 12
    assert past.restarted
    # ...and the first one still goes on where it was.
    again = take(main, 41)
    assert frame_of(again.picture.to_bgr()) == 41
    assert not again.restarted


def test_the_rtcp_clock_finds_the_frame_where_arrival_times_mislead() -> None:
    info, packets = encode(bframes=0)
    # The main stream arrives 0.6 s after the substream (a slow encoder): beyond the
    # window the arrival clock searches until it has learned the offset.
    ring = ring_of(info, packets, delay_s=0.6)
    ring.set_realtime(info, 1000.0)  # the camera's clock: pts 0 at 1000 s
    main = streams(ring)
    by_rtcp = take(main, 40, wall_time=1000.0 + 40 / FPS)
    assert by_rtcp.clock == "rtcp"
    assert frame_of(by_rtcp.picture.to_bgr()) == 40
    # By arrival alone: a wrong frame, which then fails the view check as well.
    with pytest.raises(MainStreamMissError):
        take(streams(ring), 40)


def test_a_keyframe_that_shows_a_later_moment_is_not_where_its_moment_starts() -> None:
    info = StreamInfo(
        connection=1, codec="h264", extradata=None, width=64, height=36, time_base=1 / FPS
    )
    ring = PacketRing(max_bytes=1 << 20, max_seconds=60.0)
    ring.reset(info)
    for index in range(60):
        # B-frames: each frame is shown two frames after it is decoded.
        ring.append(
            data=b"x", pts=index + 2, dts=index, keyframe=index % 25 == 0,
            arrival=1000.0 + index / FPS,
        )  # fmt: skip
    # Frame 25 (a keyframe) arrived at 1001.0 but shows 1001.08: 1001.04 is in GOP 0.
    window = ring.window(moment=1001.04)
    assert isinstance(window, Window)
    assert window.packets[0].dts == 0
    window = ring.window(moment=1001.08)
    assert isinstance(window, Window)
    assert window.packets[0].dts == 25


def test_a_bad_start_does_not_decide_that_the_views_differ() -> None:
    now = [0.0]
    span_s = MainStreamConfig().view_check_s  # the default

    def scored(value: float) -> Any:
        return lambda: value

    def check_at(check: ViewCheck, seconds: float, value: float) -> bool:
        now[0] = seconds
        return check.check(1, score=scored(value))

    # A connection's first pictures do not match (damaged, or of another moment)...
    check = ViewCheck(camera_id="cam", explicit=False, span_s=span_s, clock=lambda: now[0])
    assert [check_at(check, t, 0.55) for t in (0.0, 0.3, 0.6)] == [False] * VIEW_CHECKS
    assert not check.refuses(1)  # ...but the connection is not given up
    assert check_at(check, 1.0, 1.0)  # the mean so far passes: the main picture
    assert check_at(check, 1.5, 0.1)  # decided, the views match: not asked again
    # Pictures that keep failing for span_s: another view.
    other = ViewCheck(camera_id="cam", explicit=False, span_s=span_s, clock=lambda: now[0])
    assert not any(check_at(other, t, 0.3) for t in (0.0, 1.0, 2.0))
    assert not other.refuses(1)
    assert not check_at(other, span_s, 0.3)
    assert other.refuses(1)
    assert not other.refuses(2)  # a new connection is checked again
    mapped = ViewCheck(camera_id="cam", explicit=True, span_s=span_s, clock=lambda: now[0])
    for t in (0.0, 1.0, span_s):
        assert check_at(mapped, t, 0.3)  # main_stream.map given: used, mapped
    assert not mapped.refuses(1)


def test_a_crop_that_looks_alike_at_a_coarse_size_is_still_told_apart() -> None:
    # A face filling a close-up: a smooth blob, with some texture.
    y, x = np.mgrid[0:720, 0:1280]
    blob = 200 * np.exp(-(((x - 640) / 300) ** 2 + ((y - 360) / 220) ** 2))
    noise = np.random.default_rng(1).integers(0, 30, (720, 1280))
    scene = np.clip(blob + noise, 0, 255).astype(np.uint8)
    sub = scene[::2, ::2]
    cropped = scene[144:576, 256:1024]  # the centre 60 %
    assert similarity(small_gray(cropped), small_gray(sub)) >= FOV_MIN_SIMILARITY
    assert view_match(cropped, sub) < FOV_MIN_SIMILARITY
    assert view_match(scene, sub) > 0.95


def test_array_pictures_have_no_rtcp_time() -> None:
    # The OpenCV reader's pictures: matched on the arrival clock.
    assert getattr(ArrayPicture(np.zeros((2, 2, 3), np.uint8)), "wall_time", None) is None


def main_job(worker: SnapshotWorker, index: int, *, event_id: str) -> SnapshotJob:
    """A `frame` snapshot of frame `index`'s square, with its main-stream packets pinned."""
    box = ((8 + 4 * index) / WIDTH, 80 / HEIGHT, (24 + 4 * index) / WIDTH, 96 / HEIGHT)
    job = worker.prepare(
        SnapshotJob(
            camera_id="cam", event_id=event_id,
            picture=ArrayPicture(scene(index, scale=2)), mode=SnapshotMode.FRAME,
            config=SnapshotConfig(mode=SnapshotMode.FRAME), box_norm=box, boxes_norm=(),
            time=datetime.fromtimestamp(1000.0 + index / FPS, tz=timezone.utc),
        )
    )  # fmt: skip
    assert job.main is not None
    return job


async def test_a_job_left_waiting_past_max_seconds_takes_the_substream_picture() -> None:
    # The worker's thread yields to the cameras; a job it reaches only after the ring's span
    # renders the cheap substream picture instead of decoding a GOP, so the queue drains.
    info, packets = encode(bframes=0)
    watcher = Watcher()
    main = streams(ring_of(info, packets), watcher=watcher, max_seconds=1.0)
    results: list[SnapshotResult] = []
    done = asyncio.Event()

    def on_result(result: SnapshotResult) -> None:
        results.append(result)
        done.set()

    worker = SnapshotWorker(store=None, on_result=on_result, main_streams=main)

    async def snapshot(*, wait_s: float) -> SnapshotResult:
        done.clear()
        job = main_job(worker, 40, event_id=f"e{wait_s:g}".replace(".", "_"))
        assert worker.submit(job)
        await asyncio.sleep(wait_s)  # the worker is not running yet: the job waits
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(done.wait(), timeout=10.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return results[-1]

    prompt = await snapshot(wait_s=0.0)
    assert prompt.source == "main"
    assert prompt.jpeg is not None
    assert watcher.results == ["main"]
    late = await snapshot(wait_s=1.2)
    assert late.source == "detect"
    assert late.jpeg is not None
    assert late.timings["queue"] > 1.0
    assert watcher.results == ["main", "fallback"]
    # The substream's picture: its size, not the main stream's.
    assert cv2_shape(late.jpeg) == (HEIGHT // 2, WIDTH // 2)
    assert cv2_shape(prompt.jpeg) == (HEIGHT, WIDTH)


def cv2_shape(jpeg: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return int(image.shape[0]), int(image.shape[1])


async def test_a_backlog_of_jobs_is_drained_with_substream_pictures() -> None:
    # A burst of events: the jobs taken with MAIN_BACKLOG or more behind them render the
    # substream's picture, so the queue drains instead of refusing later events' snapshots.
    info, packets = encode(bframes=0)
    watcher = Watcher()
    main = streams(ring_of(info, packets), watcher=watcher)
    results: list[SnapshotResult] = []
    count = MAIN_BACKLOG + 3
    done = asyncio.Event()

    def on_result(result: SnapshotResult) -> None:
        results.append(result)
        if len(results) == count:
            done.set()

    worker = SnapshotWorker(store=None, on_result=on_result, main_streams=main)
    for number in range(count):
        assert worker.submit(main_job(worker, 30 + number, event_id=f"e{number}"))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(done.wait(), timeout=10.0)
    await worker.close()
    await task
    # Taken with 6, 5, 4 waiting behind: substream; then 3, 2, 1, 0: the main stream.
    assert [r.source for r in results] == ["detect"] * 3 + ["main"] * 4
    assert all(r.jpeg is not None for r in results)
    assert watcher.results == ["fallback"] * 3 + ["main"] * 4
