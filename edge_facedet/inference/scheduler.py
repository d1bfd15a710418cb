"""From per-camera latest-frame slots to detector batches: fairness, batching, backpressure.

Reader threads put frames into a `LatestFrameSlot` (one per camera, holding at most one
frame; see `edge_facedet.inference.slots`). The `Scheduler` runs on the event loop: it takes
a frame only when an infer request is free, so while the detector is busy frames wait in the
slots and get replaced there; no queue grows anywhere.
Cameras are served round robin, so a fast camera cannot starve a slow one; frames sent only
as a motion gate's recheck (`Frame.recheck`) come after the others, so idle cameras' rechecks
do not delay a camera with motion or faces, but wait at most one batch before they compete
as equals again, so they are never starved. Results are
handed on in the order their batches were submitted, so each camera's frames are published in
`seq` order even when parallel requests finish out of order; a finished batch keeps its
request until it is handed on, which bounds the results held back by `max_inflight`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from edge_facedet._compat import TaskGroup
from edge_facedet.inference.slots import LatestFrameSlot, Wakeup

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.frames import Frame
    from edge_facedet.inference.detector import BatchResult, Detector

log = logging.getLogger(__name__)


class ResultSink(Protocol):
    """Where a batch's results go (the service's pipeline; tests record them)."""

    def __call__(self, frames: Sequence[Frame], result: BatchResult) -> None: ...


class Scheduler:
    """Forms batches from the slots and keeps at most `detector.max_inflight` in flight."""

    def __init__(
        self,
        *,
        detector: Detector,
        camera_ids: Sequence[str],
        on_result: ResultSink,
        on_drop: Callable[[str], None] | None = None,
        on_inflight: Callable[[int], None] | None = None,
        batch_wait_s: float = 0.005,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not camera_ids:
            raise ValueError("the scheduler needs at least one camera")
        self._detector = detector
        self._on_result = on_result
        self._on_inflight = on_inflight
        self._batch_wait_s = batch_wait_s
        self._wakeup = Wakeup(loop=loop or asyncio.get_running_loop())
        self._drop = on_drop or (lambda _camera_id: None)
        self._slots = [self._new_slot(camera_id) for camera_id in camera_ids]
        self._by_id = {slot.camera_id: slot for slot in self._slots}
        self._next_slot = 0
        # Slots whose recheck frame was passed over once: served as equals from now on.
        self._passed_over: set[int] = set()
        self._free_requests = asyncio.Semaphore(detector.max_inflight)
        self._inflight = 0
        self._draining = False
        self._stopped = asyncio.Event()
        self.batches = 0
        self.errors = 0
        # Finished batches by submission number (None: failed), waiting for earlier ones.
        self._finished: dict[int, tuple[list[Frame], BatchResult | None]] = {}
        self._next_to_hand_on = 0

    def slot(self, camera_id: str) -> LatestFrameSlot:
        return self._by_id[camera_id]

    def _new_slot(self, camera_id: str) -> _Slot:
        drop = self._drop
        return _Slot(camera_id=camera_id, on_drop=lambda: drop(camera_id), wakeup=self._wakeup)

    def add_camera(self, camera_id: str) -> LatestFrameSlot:
        """A slot for a camera a reload added (or restarted); served from the next batch."""
        if camera_id in self._by_id:
            raise ValueError(f"camera {camera_id!r} already has a slot")
        slot = self._new_slot(camera_id)
        self._slots = [*self._slots, slot]
        self._by_id[camera_id] = slot
        self._reindexed()
        return slot

    def remove_camera(self, camera_id: str) -> None:
        """Forget a camera's slot (a reload removed or restarted it); a frame waiting in it is
        not inferred. Its reader must be stopped: puts into the orphaned slot go nowhere."""
        slot = self._by_id.pop(camera_id, None)
        if slot is None:
            return
        self._slots = [other for other in self._slots if other is not slot]
        self._reindexed()

    def _reindexed(self) -> None:
        # Round-robin positions are indices into `_slots`: after a change they name other
        # cameras, so the pass-over marks are dropped (each costs at most one batch's wait).
        self._passed_over.clear()
        self._next_slot = self._next_slot % len(self._slots) if self._slots else 0

    @property
    def inflight(self) -> int:
        return self._inflight

    def _take_round_robin(self, limit: int) -> list[Frame]:
        """Up to `limit` frames, one per camera, starting after the last camera served:
        first the frames that are no rechecks (and rechecks passed over before), then the
        rest. A recheck left waiting is served as an equal next time."""
        taken: list[Frame] = []
        count = len(self._slots)
        served: set[int] = set()
        left_waiting: list[int] = []  # slots whose recheck the first pass left
        for first_pass in (True, False):
            if not first_pass and not left_waiting:
                break
            # Fixed for the pass: moving it with each frame taken would skip the next camera.
            start = self._next_slot
            for offset in range(count):
                if len(taken) == limit:
                    break
                index = (start + offset) % count
                if index in served:
                    continue  # one frame per camera and batch
                slot = self._slots[index]
                if first_pass and index not in self._passed_over:
                    frame, recheck_waits = slot.take_unless_recheck()
                    if recheck_waits:
                        left_waiting.append(index)
                else:
                    frame = slot.take()
                if frame is not None:
                    taken.append(frame)
                    served.add(index)
                    self._passed_over.discard(index)
                    self._next_slot = (index + 1) % count
        # A recheck the batch had no room for is served as an equal from now on.
        self._passed_over.update(index for index in left_waiting if index not in served)
        return taken

    async def drain(self, *, timeout: float) -> bool:
        """Take no more frames; wait up to `timeout` for the batches in flight to be handled.

        For an orderly stop: results of frames already in the detector still get published.
        True when `run()` has returned within the time.
        """
        self._draining = True
        self._wakeup.event.set()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _collect_batch(self) -> list[Frame]:
        try:
            return await self._wait_for_frames()
        finally:
            # Until the next batch is collected, a put() need not wake the loop: the frame
            # waits in its slot, and the next scan (after `listen`) finds it.
            self._wakeup.mute()

    async def _wait_for_frames(self) -> list[Frame]:
        limit = self._detector.batch_size
        batch: list[Frame] = []
        deadline: float | None = None
        while not self._draining:
            # Listen (and clear) before scanning: a put() after the scan sets the event.
            self._wakeup.listen()
            batch += self._take_round_robin(limit - len(batch))
            if len(batch) == limit:
                return batch
            if batch:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._batch_wait_s
                if now >= deadline:
                    return batch
                try:
                    await asyncio.wait_for(self._wakeup.event.wait(), deadline - now)
                except asyncio.TimeoutError:
                    return batch
            else:
                await self._wakeup.event.wait()
        return batch

    async def run(self) -> None:
        """Serve batches until cancelled, or until `drain()` and the last batch is handled."""
        try:
            await self._serve()
        finally:
            self._stopped.set()

    async def _serve(self) -> None:
        async with TaskGroup() as group:
            while not self._draining:
                # Backpressure: no frame leaves its slot before a request is free for it.
                await self._free_requests.acquire()
                try:
                    frames = await self._collect_batch()
                except BaseException:
                    self._free_requests.release()
                    raise
                if not frames:  # draining
                    self._free_requests.release()
                    break
                self._inflight += 1
                if self._on_inflight:
                    self._on_inflight(self._inflight)
                group.create_task(
                    self._infer(frames, number=self.batches), name=f"infer-batch-{self.batches}"
                )
                self.batches += 1

    async def _infer(self, frames: list[Frame], *, number: int) -> None:
        images: list[NDArray[np.uint8]] = [frame.image for frame in frames]
        result: BatchResult | None = None
        try:
            result = await self._detector.detect(images)
        except Exception:
            # One failed request must not stop the service; a detector that keeps failing
            # shows as no frames inferred, which the health check and watchdog act on.
            self.errors += 1
            log.exception("inference failed for a batch of %d frames", len(frames))
        finally:
            # Also when cancelled: later batches must not wait for this one for ever.
            self._inflight -= 1
            if self._on_inflight:
                self._on_inflight(self._inflight)
            self._finished[number] = (frames, result)
            self._hand_on_in_order()

    def _hand_on_in_order(self) -> None:
        while self._next_to_hand_on in self._finished:
            frames, result = self._finished.pop(self._next_to_hand_on)
            self._next_to_hand_on += 1
            self._free_requests.release()
            if result is None:
                continue
            try:
                self._on_result(frames, result)
            except Exception:
                self.errors += 1
                log.exception("handling the results of a batch failed")


class _Slot(LatestFrameSlot):
    """A `LatestFrameSlot` that can leave a waiting recheck frame where it is (the reader
    then keeps its one frame waiting, as while the detector is busy)."""

    def take_unless_recheck(self) -> tuple[Frame | None, bool]:
        """The waiting frame unless it is a recheck; and whether a recheck was left."""
        with self._lock:
            frame = self._frame
            if frame is None:
                return None, False
            if frame.recheck:
                return None, True
            self._frame = None
            self._emptied.notify()
        return frame, False
