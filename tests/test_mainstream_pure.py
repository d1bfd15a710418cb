"""The main stream's pure parts: the packet ring's bounds and GOP eviction, box mapping,
the view check's similarity, and the refining step's choice of face."""

from __future__ import annotations

import numpy as np
import pytest

from edge_facedet.config.mainstream import FieldOfView
from edge_facedet.outputs.snapshots.fov import (
    FOV_MIN_SIMILARITY,
    map_box,
    similarity,
    small_gray,
    view_of,
)
from edge_facedet.outputs.snapshots.refine import iou, refine_box, region_around
from edge_facedet.sources.packetring import PacketRing, StreamInfo, Window

INFO = StreamInfo(
    connection=1,
    codec="h264",
    extradata=None,
    width=1280,
    height=720,
    time_base=1 / 90000,
)


def _feed(ring: PacketRing, *, frames: int, gop: int, size: int, fps: float = 25.0) -> None:
    """`frames` packets at `fps`, a keyframe every `gop`, arrival times from 1000 s."""
    for index in range(frames):
        ring.append(
            data=bytes(size),
            pts=index * 3600,
            dts=index * 3600,
            keyframe=index % gop == 0,
            arrival=1000.0 + index / fps,
        )


def test_the_ring_holds_at_most_max_bytes_and_always_starts_at_a_keyframe() -> None:
    ring = PacketRing(max_bytes=100_000, max_seconds=60.0)
    ring.reset(INFO)
    _feed(ring, frames=400, gop=50, size=1_000)
    stats = ring.stats()
    assert stats.bytes_held <= 100_000
    # Whole GOPs went: what is left is whole GOPs plus the one being written.
    assert stats.packets_held % 50 == 400 % 50 or stats.packets_held % 50 == 0
    window = ring.window(moment=1e9)
    assert isinstance(window, Window)
    assert window.packets[0].keyframe
    assert stats.packets_dropped == 0


def test_the_ring_holds_at_most_max_seconds_of_arrivals() -> None:
    ring = PacketRing(max_bytes=1 << 30, max_seconds=3.0)
    ring.reset(INFO)
    _feed(ring, frames=500, gop=25, size=10)
    stats = ring.stats()
    assert stats.oldest_arrival is not None and stats.newest_arrival is not None
    assert stats.newest_arrival - stats.oldest_arrival <= 3.0
    # One GOP (1 s) is all that is evicted beyond the bound at a time.
    assert stats.newest_arrival - stats.oldest_arrival > 2.0


def test_a_window_starts_at_the_last_keyframe_before_the_moment() -> None:
    ring = PacketRing(max_bytes=1 << 30, max_seconds=60.0)
    ring.reset(INFO)
    _feed(ring, frames=200, gop=50, size=10)
    moment = 1000.0 + 120 / 25  # frame 120: its GOP starts at frame 100
    window = ring.window(moment=moment)
    assert isinstance(window, Window)
    assert window.packets[0].keyframe and window.packets[0].pts == 100 * 3600
    assert window.packets[-1].pts == 199 * 3600


def test_a_gop_longer_than_the_buffer_is_dropped_whole_until_the_next_keyframe() -> None:
    ring = PacketRing(max_bytes=1 << 30, max_seconds=2.0)
    ring.reset(INFO)
    _feed(ring, frames=100, gop=250, size=10)  # one 10 s GOP: beyond 2 s it cannot be held
    stats = ring.stats()
    assert stats.packets_held < 100
    assert stats.packets_dropped > 0
    assert ring.window(moment=1000.0 + 1.0) in ("empty", "evicted")
    # The next keyframe starts a decodable run again.
    assert ring.append(data=b"k", pts=1, dts=1, keyframe=True, arrival=1005.0)
    window = ring.window(moment=1005.0)
    assert isinstance(window, Window) and window.packets[0].keyframe


def test_a_moment_before_the_oldest_keyframe_is_evicted_and_an_empty_ring_says_so() -> None:
    ring = PacketRing(max_bytes=1 << 30, max_seconds=2.0)
    assert ring.window(moment=1.0) == "empty"
    ring.reset(INFO)
    _feed(ring, frames=200, gop=25, size=10)
    assert ring.window(moment=1000.5) == "evicted"
    ring.reset(None)
    assert ring.window(moment=1e9) == "empty"


def test_extend_adds_the_packets_that_came_after_a_window_and_stops_at_a_gap() -> None:
    ring = PacketRing(max_bytes=1 << 30, max_seconds=60.0)
    ring.reset(INFO)
    _feed(ring, frames=60, gop=50, size=10)
    window = ring.window(moment=1000.0 + 55 / 25)
    assert isinstance(window, Window)
    ring.append(data=b"x", pts=1, dts=1, keyframe=False, arrival=1003.0)
    longer = ring.extend(window, until=1002.9, timeout_s=0.0)
    assert len(longer.packets) == len(window.packets) + 1
    ring.reset(INFO)  # a new connection: the old window is not extended from it
    assert ring.extend(window, until=0.0, timeout_s=0.0) is window


def test_boxes_map_unchanged_for_the_same_view_and_into_an_explicit_view() -> None:
    box = (0.25, 0.5, 0.5, 0.75)
    assert map_box(box, view=None) == box
    view = FieldOfView(x=0.1, y=0.2, w=0.5, h=0.4)
    assert map_box(box, view=view) == pytest.approx((0.225, 0.4, 0.35, 0.5))
    image = np.zeros((100, 200, 3), np.uint8)
    assert view_of(image, view=view).shape == (40, 100, 3)


def test_similarity_tells_the_same_view_from_a_crop() -> None:
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 255, (72, 128), dtype=np.uint8)
    scene = np.asarray(np.kron(scene, np.ones((10, 10))), np.uint8)  # 720x1280, blocky
    sub = scene[::2, ::2]
    same = similarity(small_gray(scene), small_gray(sub))
    cropped = scene[90:630, 160:1120]
    other = similarity(small_gray(cropped), small_gray(sub))
    assert same > 0.95
    assert other < FOV_MIN_SIMILARITY


class _Finder:
    input_size = (448, 448)

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = np.asarray(rows, np.float32).reshape(-1, 5)
        self.seen: tuple[int, ...] = ()

    def find(self, image: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        self.seen = image.shape
        return self.rows


def test_refining_takes_the_face_overlapping_the_mapped_box() -> None:
    image = np.zeros((720, 1280, 3), np.uint8)
    mapped = (600.0, 300.0, 660.0, 380.0)  # 80 px high: a 320 px square around it
    left, top, right, bottom = region_around(mapped, width=1280, height=720)
    assert (right - left, bottom - top) == (320, 320)
    # ...but never smaller than the network's input: the main stream's pixels at 1:1.
    left, top, right, bottom = region_around(mapped, width=1280, height=720, min_side=448)
    assert (left, top, right - left, bottom - top) == (406, 116, 448, 448)
    # In the region's normalised coordinates: one face near the mapped box, one far off.
    near = [0.9, 0.44, 0.40, 0.58, 0.60]
    far = [0.95, 0.0, 0.0, 0.1, 0.1]
    finder = _Finder([far, near])
    refined = refine_box(image, mapped=mapped, finder=finder, shifts=(0.0,))
    assert finder.seen == (448, 448, 3)
    assert refined.refined
    assert iou(refined.box, mapped) > 0.5
    assert refined.box[0] == pytest.approx(left + 0.44 * 448)
    alone = refine_box(image, mapped=mapped, finder=_Finder([far]))
    assert not alone.refined and alone.box == mapped


class _SquareFinder:
    """Sees the bright square in what it is shown, each look's box off by the next of
    `errors` (network pixels), as the detector's box moves with the anchor grid."""

    input_size = (448, 448)

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.looks = 0

    def find(self, image: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        ys, xs = np.nonzero(image.min(axis=2) > 127)
        error = self.errors[self.looks % len(self.errors)]
        self.looks += 1
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) + error
        return np.array([[0.9, *(box / 448)]], np.float32)


def test_refining_averages_looks_at_the_region_moved_across_the_anchor_grid() -> None:
    image = np.zeros((720, 1280, 3), np.uint8)
    face = (610.0, 310.0, 650.0, 370.0)
    image[310:370, 610:650] = 255
    mapped = (600.0, 300.0, 660.0, 380.0)  # where the substream's box lands: near the face
    one = refine_box(image, mapped=mapped, finder=_SquareFinder([3]), shifts=(0.0,))
    assert one.box == pytest.approx(tuple(v + 3 for v in face))
    # Three looks, the region moved each time: the face stays where it is in the picture,
    # and the looks' errors average out.
    finder = _SquareFinder([3, -3, 0])
    averaged = refine_box(image, mapped=mapped, finder=finder)
    assert finder.looks == 3
    assert averaged.refined
    assert averaged.box == pytest.approx(face, abs=0.01)
    # A look whose box strays (still over the mapped box, not over the first look's) is
    # left out of the mean.
    strayed = refine_box(image, mapped=mapped, finder=_SquareFinder([0, 0, 12]))
    assert strayed.box == pytest.approx(face, abs=0.01)
