"""Scheduler: fairness, batching, backpressure and drop counting, against a fake detector."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pytest

from edge_facedet.frames import Frame
from edge_facedet.inference.detector import BatchResult
from edge_facedet.inference.scheduler import Scheduler
from edge_facedet.inference.slots import LatestFrameSlot, Wakeup

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

IMAGE = np.zeros((8, 8, 3), np.uint8)


def make_frame(camera_id: str, seq: int, *, recheck: bool = False) -> Frame:
    return Frame(
        camera_id=camera_id,
        seq=seq,
        capture_time=datetime.now(timezone.utc),
        capture_monotonic=time.monotonic(),
        width=8,
        height=8,
        image=IMAGE,
        recheck=recheck,
    )


class FakeDetector:
    """Satisfies the Detector protocol; each call takes `delay_s` and is recorded."""

    def __init__(self, *, batch_size: int = 1, max_inflight: int = 2, delay_s: float = 0.01):
        self.batch_size = batch_size
        self.max_inflight = max_inflight
        self.input_size = (8, 8)
        self.delay_s = delay_s
        self.inflight = 0
        self.peak_inflight = 0
        self.batches: list[int] = []
        self.gate: asyncio.Event | None = None

    async def detect(self, images: Sequence[NDArray[np.uint8]]) -> BatchResult:
        assert 1 <= len(images) <= self.batch_size
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        self.batches.append(len(images))
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay_s)
        finally:
            self.inflight -= 1
        rows = [np.zeros((0, 5), np.float32) for _ in images]
        return BatchResult(rows=rows, inference_seconds=self.delay_s)


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def __call__(self, frames: Sequence[Frame], result: BatchResult) -> None:
        assert len(frames) == len(result.rows)
        self.frames.extend(frames)


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_round_robin_serves_a_slow_camera_beside_fast_ones() -> None:
    detector = FakeDetector(batch_size=1, max_inflight=1, delay_s=0.005)
    recorder = Recorder()
    scheduler = Scheduler(
        detector=detector, camera_ids=["fast1", "fast2", "slow"], on_result=recorder
    )
    stop = threading.Event()

    def feed(camera_id: str, period_s: float) -> None:
        seq = 0
        while not stop.is_set():
            scheduler.slot(camera_id).put(make_frame(camera_id, seq))
            seq += 1
            time.sleep(period_s)

    threads = [
        threading.Thread(target=feed, args=("fast1", 0.0005)),
        threading.Thread(target=feed, args=("fast2", 0.0005)),
        threading.Thread(target=feed, args=("slow", 0.05)),
    ]
    for thread in threads:
        thread.start()
    try:
        await run_for(scheduler, 1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    served = Counter(frame.camera_id for frame in recorder.frames)
    # The slow camera offers ~20 frames; round robin must take nearly all of them although
    # the fast cameras always have a frame waiting.
    assert served["slow"] >= 15, served
    # The fast cameras share the rest evenly.
    assert abs(served["fast1"] - served["fast2"]) <= max(3, served["fast1"] // 10), served
    assert scheduler.slot("fast1").dropped > 0


async def until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


async def test_a_recheck_frame_comes_after_frames_with_motion_under_contention() -> None:
    detector = FakeDetector(batch_size=1, max_inflight=1, delay_s=0.0)
    recorder = Recorder()
    # "idle" is first in round-robin order, and its frame waits as long as the others.
    scheduler = Scheduler(detector=detector, camera_ids=["idle", "a", "b"], on_result=recorder)
    scheduler.slot("idle").put(make_frame("idle", 0, recheck=True))
    scheduler.slot("a").put(make_frame("a", 0))
    scheduler.slot("b").put(make_frame("b", 0))
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: len(recorder.frames) == 3)
    finally:
        task.cancel()
    assert [frame.camera_id for frame in recorder.frames] == ["a", "b", "idle"]


async def test_a_recheck_frame_is_not_starved_by_cameras_that_always_have_motion() -> None:
    detector = FakeDetector(batch_size=1, max_inflight=1, delay_s=0.0)
    served: list[str] = []
    seq = 0

    def refill(frames: Sequence[Frame], result: BatchResult) -> None:
        # The busy cameras have a new frame with motion waiting whenever a batch is formed.
        nonlocal seq
        del result
        served.extend(frame.camera_id for frame in frames)
        seq += 1
        for camera_id in ("a", "b"):
            scheduler.slot(camera_id).put(make_frame(camera_id, seq))

    scheduler = Scheduler(detector=detector, camera_ids=["idle", "a", "b"], on_result=refill)
    scheduler.slot("idle").put(make_frame("idle", 0, recheck=True))
    refill([], BatchResult(rows=[], inference_seconds=0.0))
    served.clear()
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: len(served) >= 6)
    finally:
        task.cancel()
    # Passed over once, then served as an equal in round-robin order: third, not never.
    assert served[:3] == ["a", "b", "idle"], served
    assert served[3:6].count("idle") == 0


async def test_rechecks_alone_are_served_round_robin_like_any_frames() -> None:
    detector = FakeDetector(batch_size=2, max_inflight=1, delay_s=0.0)
    recorder = Recorder()
    scheduler = Scheduler(detector=detector, camera_ids=["x", "y", "z"], on_result=recorder)
    for camera_id in ("x", "y", "z"):
        scheduler.slot(camera_id).put(make_frame(camera_id, 0, recheck=True))
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: len(recorder.frames) == 3)
    finally:
        task.cancel()
    assert [frame.camera_id for frame in recorder.frames] == ["x", "y", "z"]
    assert detector.batches[0] == 2


async def test_backpressure_keeps_frames_in_slots_and_counts_drops() -> None:
    detector = FakeDetector(batch_size=1, max_inflight=2, delay_s=0.0)
    detector.gate = asyncio.Event()  # inference blocked until the gate opens
    recorder = Recorder()
    drops: Counter[str] = Counter()
    scheduler = Scheduler(
        detector=detector,
        camera_ids=["a", "b", "c"],
        on_result=recorder,
        on_drop=lambda camera_id: drops.update([camera_id]),
    )
    task = asyncio.create_task(scheduler.run())
    for seq in range(50):
        for camera_id in ("a", "b", "c"):
            scheduler.slot(camera_id).put(make_frame(camera_id, seq))
        await asyncio.sleep(0.001)
    # Only as many batches as infer requests were taken; nothing queued behind them.
    assert detector.peak_inflight == 2
    assert scheduler.inflight == 2
    assert sum(drops.values()) >= 3 * 50 - 2 - 3
    detector.gate.set()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # After the gate opened, the newest frame of each camera was inferred, not an old one.
    latest = {frame.camera_id: frame.seq for frame in recorder.frames}
    assert latest == {"a": 49, "b": 49, "c": 49}
    taken = len(recorder.frames)
    for camera_id in ("a", "b", "c"):
        assert scheduler.slot(camera_id).dropped == drops[camera_id]
    assert taken + sum(drops.values()) == 150


async def test_batches_fill_across_cameras_and_partial_batches_leave_after_the_wait() -> None:
    detector = FakeDetector(batch_size=4, max_inflight=1, delay_s=0.0)
    recorder = Recorder()
    scheduler = Scheduler(
        detector=detector,
        camera_ids=["a", "b", "c", "d", "e"],
        on_result=recorder,
        batch_wait_s=0.05,
    )
    task = asyncio.create_task(scheduler.run())
    for camera_id in ("a", "b", "c", "d", "e"):
        scheduler.slot(camera_id).put(make_frame(camera_id, 0))
    await asyncio.sleep(0.01)
    assert detector.batches == [4]  # a full batch leaves at once
    started = time.monotonic()
    while len(detector.batches) < 2 and time.monotonic() - started < 1:
        await asyncio.sleep(0.005)
    waited = time.monotonic() - started
    assert detector.batches == [4, 1]  # the fifth frame left alone after the batch wait
    assert waited >= 0.03
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(frame.camera_id for frame in recorder.frames) == ["a", "b", "c", "d", "e"]


async def test_a_failing_batch_does_not_stop_the_scheduler() -> None:
    class FlakyDetector(FakeDetector):
        calls = 0

        async def detect(self, images: Sequence[NDArray[np.uint8]]) -> BatchResult:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("device lost")
            return await super().detect(images)

    detector = FlakyDetector(batch_size=1, max_inflight=1, delay_s=0.0)
    recorder = Recorder()
    scheduler = Scheduler(detector=detector, camera_ids=["a"], on_result=recorder)
    task = asyncio.create_task(scheduler.run())
    scheduler.slot("a").put(make_frame("a", 0))
    await asyncio.sleep(0.02)
    scheduler.slot("a").put(make_frame("a", 1))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scheduler.errors == 1
    assert [frame.seq for frame in recorder.frames] == [1]


async def test_results_are_handed_on_in_submission_order_when_requests_finish_out_of_order() -> (
    None
):
    class FirstCallSlow(FakeDetector):
        calls = 0

        async def detect(self, images: Sequence[NDArray[np.uint8]]) -> BatchResult:
            self.calls += 1
            # The first request takes 0.15 s, later ones 0.01 s, as a cold first inference
            # does: frame 1 finishes before frame 0.
            self.delay_s = 0.15 if self.calls == 1 else 0.01
            return await super().detect(images)

    detector = FirstCallSlow(batch_size=1, max_inflight=2)
    recorder = Recorder()
    scheduler = Scheduler(detector=detector, camera_ids=["a"], on_result=recorder)
    task = asyncio.create_task(scheduler.run())
    for seq in range(4):
        scheduler.slot("a").put(make_frame("a", seq))
        await asyncio.sleep(0.03)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert detector.peak_inflight == 2  # frames 0 and 1 really were in flight together
    seqs = [frame.seq for frame in recorder.frames]
    # Frame 1's finished request is held until frame 0 is handed on, so frame 2 may be
    # replaced in its slot by frame 3 meanwhile: order is kept, not every frame.
    assert seqs[:2] == [0, 1]
    assert seqs == sorted(seqs)
    assert seqs[-1] == 3


def test_claim_refuses_while_a_frame_waits_and_counts_the_drop() -> None:
    drops: list[str] = []

    async def scenario() -> None:
        scheduler = Scheduler(
            detector=FakeDetector(), camera_ids=["a"], on_result=lambda *_: None,
            on_drop=drops.append,
        )  # fmt: skip
        slot = scheduler.slot("a")
        assert slot.claim()  # empty: convert and put
        slot.put(make_frame("a", 0))
        assert not slot.claim()  # the waiting frame is kept, the new one dropped
        assert slot.dropped == 1
        taken = slot.take()
        assert taken is not None
        assert taken.seq == 0
        assert slot.claim()

    asyncio.run(scenario())
    assert drops == ["a"]


# --- the slots on their own --------------------------------------------------------------


def test_put_replaces_a_waiting_frame_counts_the_drop_and_wakes_the_loop() -> None:
    async def scenario() -> None:
        wakeup = Wakeup(loop=asyncio.get_running_loop())
        drops: list[None] = []
        slot = LatestFrameSlot(camera_id="a", on_drop=lambda: drops.append(None), wakeup=wakeup)
        await asyncio.to_thread(slot.put, make_frame("a", 0))
        await asyncio.wait_for(wakeup.event.wait(), 5)
        slot.put(make_frame("a", 1))  # replaces frame 0, not yet taken
        assert (slot.dropped, len(drops)) == (1, 1)
        taken = slot.take()
        assert taken is not None
        assert taken.seq == 1
        assert slot.take() is None

    asyncio.run(scenario())


class RecordingLoop:
    """Stands in for the event loop: keeps what `call_soon_threadsafe` was handed."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], object]] = []

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        self.callbacks.append(callback)


def test_wakeups_from_many_threads_are_coalesced() -> None:
    loop = RecordingLoop()
    wakeup = Wakeup(loop=loop)  # type: ignore[arg-type]
    threads = [threading.Thread(target=wakeup.notify) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The first wake-up has not run yet: the other notifications schedule nothing more.
    assert len(loop.callbacks) == 1
    assert not wakeup.event.is_set()
    loop.callbacks.pop()()
    assert wakeup.event.is_set()
    wakeup.notify()  # once the wake-up ran, the next notification schedules one again
    assert len(loop.callbacks) == 1


def test_wait_until_empty_returns_when_the_frame_is_taken() -> None:
    async def scenario() -> None:
        wakeup = Wakeup(loop=asyncio.get_running_loop())
        slot = LatestFrameSlot(camera_id="a", on_drop=lambda: None, wakeup=wakeup)
        assert slot.wait_until_empty(0)  # empty already
        slot.put(make_frame("a", 0))
        assert not slot.wait_until_empty(0.01)  # nobody takes it
        waiting = asyncio.create_task(asyncio.to_thread(slot.wait_until_empty, 5))
        await asyncio.sleep(0.05)
        assert slot.take() is not None
        assert await waiting
        assert slot.dropped == 0

    asyncio.run(scenario())
