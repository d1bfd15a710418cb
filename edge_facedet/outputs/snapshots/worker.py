"""Snapshot jobs rendered and stored off the event loop: one at a time, in order, bounded.

The loop hands a job over with `submit` (never blocks; refuses when `max_queued` jobs wait,
so a burst of tracks cannot grow memory: each job holds a full-size picture). A job for an
event that already has one waiting replaces it in its place in the queue (the event's file
holds one picture, so the older best face would only be overwritten): the older job's
result says `superseded`. `run`, a task of the service's TaskGroup, takes the jobs first in,
first out and renders and stores each in the worker's own thread; one at a time, and at the
lowest priority (WORKER_NICE), because snapshots must not take the cores the decoders and
the detector need: they use what the cameras leave, and each camera's snapshots come out in
the order asked for. The result goes back to `on_result` on the loop: a failure is a result
with `error`, never an exception that would end the TaskGroup.

A job with `main` (a camera detected on its substream, mainframe.py) is rendered from the
main stream's picture; when that fails for any reason the job falls back to its own
(substream) picture, the result says `source="detect"`, and the fallback is counted and
logged (powers of two).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_facedet.logthrottle import every_power_of_two
from edge_facedet.outputs.snapshots.mainmiss import MainStreamMissError
from edge_facedet.outputs.snapshots.render import render_snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime
    from pathlib import Path

    from edge_facedet.config.snapshots import SnapshotConfig, SnapshotMode
    from edge_facedet.frames import Picture
    from edge_facedet.outputs.snapshots.mainframe import MainStreamRef, MainStreams
    from edge_facedet.outputs.snapshots.store import SnapshotStore
    from edge_facedet.tracking.events import Box

__all__ = ["SnapshotJob", "SnapshotResult", "SnapshotWorker"]

log = logging.getLogger(__name__)

WORKER_NICE = 19
"""The worker thread's niceness (Linux sets it per thread; FFmpeg's and OpenVINO's work for a
snapshot runs in this thread). Against busy threads of niceness 0 the scheduler gives it
about 1.5 % of their share (weights 15 : 1024), so at full load snapshots wait instead of
costing the cameras detections, and still finish; with cores to spare they run at full
speed. A main-stream job that waited in the queue longer than its camera's
`main_stream.max_seconds` falls back to the substream's cheaper picture, so a long overload
drains the queue."""

MAIN_BACKLOG = 4
"""A main-stream job taken with this many jobs waiting behind it renders the substream's
picture instead (counted as a fallback): under a burst of events the worker keeps up and
every event keeps a snapshot, rather than a few sharp ones and the rest refused."""

PRUNE_INTERVAL_S = 60.0
"""While no job comes, the store's age bound is applied this often by default (the smallest
`max_age_s` allowed is a minute, so no file outlives its bound by much more)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotJob:
    """One snapshot to make: an event's best face in its picture."""

    camera_id: str
    event_id: str
    picture: Picture
    mode: SnapshotMode
    config: SnapshotConfig
    box_norm: Box
    """The best face, normalised to [0, 1]."""
    boxes_norm: tuple[Box, ...]
    """Every face detected in the best face's frame (blurred_frame hides them all)."""
    time: datetime
    """The best face's capture time (UTC, timezone-aware); names the file."""
    main: MainStreamRef | None = None
    """The main stream's packets for this face (`SnapshotWorker.prepare`); None: render
    `picture`, the detected stream's."""


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    job: SnapshotJob
    jpeg: bytes | None
    """None when rendering failed."""
    error: str | None
    """Why rendering or storing failed; None on success."""
    path: Path | None
    """The stored file; None without a store or when storing failed."""
    source: str = "detect"
    """Whose picture was rendered: "main" (the camera's `url`) or "detect"."""
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per step: "queue" (submitted to taken), the main stream's steps
    (mainframe.MainPicture.timings), "render" and "store"."""
    superseded: bool = False
    """True: not rendered, a newer job of the same event took its place in the queue."""


class SnapshotWorker:
    """See the module docstring. `store` None: JPEGs are only handed to `on_result`;
    otherwise, while no job comes, the store is pruned every `prune_interval_s`."""

    def __init__(
        self,
        *,
        store: SnapshotStore | None,
        on_result: Callable[[SnapshotResult], None],
        max_queued: int = 16,
        prune_interval_s: float = PRUNE_INTERVAL_S,
        main_streams: MainStreams | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        if not prune_interval_s > 0:
            raise ValueError(f"prune_interval_s must be positive, got {prune_interval_s}")
        self._prune_interval_s = prune_interval_s
        self._store = store
        self._on_result = on_result
        self._max_queued = max_queued
        # Unbounded as a Queue; submit() enforces the bound, so close() can always add the
        # stop marker even when the queue is full. The queue holds (camera, event) keys; the
        # key's job, with its submission time (time.monotonic()) for its queue wait, is in
        # `_pending`, where a newer job of the same event replaces it.
        self._queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._pending: dict[tuple[str, str], tuple[SnapshotJob, float]] = {}
        self._closing = False
        self._main = main_streams
        self._fallbacks = 0

    @property
    def queued(self) -> int:
        """Jobs waiting (not counting the one being rendered)."""
        return self._queue.qsize()

    def prepare(self, job: SnapshotJob) -> SnapshotJob:
        """`job` with the main stream's packets pinned where its camera has a main stream
        that can serve it (on the loop, microseconds; mainframe.MainStreams.attach)."""
        main = self._main
        if main is None or job.camera_id not in main:
            return job
        ref = main.attach(job.camera_id, moment=job.time.timestamp())
        return job if ref is None else dataclasses.replace(job, main=ref)

    def submit(self, job: SnapshotJob) -> bool:
        """Queue `job` (on the loop, never blocks); False when full or closing. A job of
        the same event still waiting is replaced (its result, `superseded`, is delivered
        now)."""
        if self._closing:
            return False
        key = (job.camera_id, job.event_id)
        waiting = self._pending.get(key)
        if waiting is None and self._queue.qsize() >= self._max_queued:
            return False
        self._pending[key] = (job, time.monotonic())
        if waiting is None:
            self._queue.put_nowait(key)
        else:
            self._deliver(SnapshotResult(waiting[0], None, None, None, superseded=True))
        return True

    async def run(self) -> None:
        """Take jobs in order until `close()`; never raises but CancelledError."""
        # One get() waits across the idle timeouts: cancelling it at a timeout (wait_for)
        # could lose a job that arrived in the same instant on older Pythons.
        getter: asyncio.Future[tuple[str, str] | None] | None = None
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="snapshots", initializer=_lower_priority
        )
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter}, timeout=self._prune_interval_s)
                if not done:
                    await self._prune()
                    continue
                key, getter = getter.result(), None
                try:
                    if key is None:
                        return
                    job, submitted = self._pending.pop(key)
                    backlog = self._queue.qsize()
                    process = functools.partial(self._process, job, submitted, backlog=backlog)
                    result = await loop.run_in_executor(thread, process)
                    self._deliver(result)
                finally:
                    self._queue.task_done()
        finally:
            if getter is not None:
                getter.cancel()
            # A job still rendering (cancelled mid-way) finishes in the thread and is lost.
            thread.shutdown(wait=False, cancel_futures=True)

    async def close(self, *, timeout_s: float = 2.0) -> None:
        """Refuse new jobs, let the queued ones finish within `timeout_s`, stop `run()`.

        Jobs still queued at the timeout are reported as failed, not rendered. A job being
        rendered then cannot be interrupted (it is in a thread); `run()` returns after it.
        """
        self._closing = True
        try:
            await asyncio.wait_for(self._queue.join(), timeout=timeout_s)
        except asyncio.TimeoutError:
            dropped = 0
            while not self._queue.empty():
                key = self._queue.get_nowait()
                self._queue.task_done()
                if key is not None:
                    dropped += 1
                    error = "not rendered: the service was stopping"
                    job, _ = self._pending.pop(key)
                    self._deliver(SnapshotResult(job, None, error, None))
            if dropped:
                log.warning("snapshots: %d queued jobs were dropped at shutdown", dropped)
        self._queue.put_nowait(None)

    def _process(self, job: SnapshotJob, submitted: float, *, backlog: int) -> SnapshotResult:
        """In the worker thread: render, then store; failures become the result's error.
        `backlog`: the jobs waiting behind this one when it was taken."""
        timings = {"queue": time.monotonic() - submitted}
        main = job.main is not None
        jpeg = self._render_main(job, timings=timings, backlog=backlog) if main else None
        source = "detect" if jpeg is None else "main"
        try:
            if jpeg is None:
                jpeg = render_snapshot(
                    picture=job.picture,
                    mode=job.mode,
                    config=job.config,
                    box_norm=job.box_norm,
                    boxes_norm=job.boxes_norm,
                )
        except Exception as exc:  # noqa: BLE001 - reported in the result, never raised
            return SnapshotResult(job, None, f"rendering failed: {_describe(exc)}", None)
        if self._store is None:
            return SnapshotResult(job, jpeg, None, None, source, timings)
        stored = time.monotonic()
        try:
            path = self._store.write(
                camera_id=job.camera_id, event_id=job.event_id, jpeg=jpeg, when=job.time
            )
        except Exception as exc:  # noqa: BLE001 - reported in the result, never raised
            error = f"storing failed: {_describe(exc)}"
            return SnapshotResult(job, jpeg, error, None, source, timings)
        timings["store"] = time.monotonic() - stored
        return SnapshotResult(job, jpeg, None, path, source, timings)

    def _render_main(
        self, job: SnapshotJob, *, timings: dict[str, float], backlog: int
    ) -> bytes | None:
        """The JPEG from the main stream, or None (counted and logged: the caller falls
        back to the job's own picture). Adds its steps' seconds to `timings`."""
        main, ref = self._main, job.main
        assert main is not None and ref is not None  # noqa: S101 - prepare() attached it
        if backlog >= MAIN_BACKLOG:
            # Decoding and refining (about 0.1 s of a core) for every job would let the queue
            # fill and refuse later events' snapshots altogether: the cheap picture drains it.
            self._fall_back(job, reason=f"{backlog} snapshots were waiting behind it")
            return None
        waited = timings["queue"]
        if waited > ref.settings.max_seconds:
            # The worker is behind (its thread yields to the cameras): the substream's
            # cheaper picture lets it catch up instead of decoding a GOP for every job.
            reason = (
                f"the snapshot waited {waited:.1f} s in the queue "
                f"(over main_stream.max_seconds, {ref.settings.max_seconds:g} s)"
            )
            self._fall_back(job, reason=reason)
            return None
        try:
            taken = main.take(
                job.camera_id,
                ref=ref,
                detected=job.picture,
                boxes_norm=(job.box_norm, *job.boxes_norm),
            )
            timings.update(taken.timings)
            rendering = time.monotonic()
            jpeg = render_snapshot(
                picture=taken.picture,
                mode=job.mode,
                config=job.config,
                box_norm=taken.box_norm,
                boxes_norm=taken.boxes_norm,
            )
            timings["render"] = time.monotonic() - rendering
        except Exception as exc:  # noqa: BLE001 - any failure falls back, never raises
            reason = str(exc) if isinstance(exc, MainStreamMissError) else _describe(exc)
            self._fall_back(job, reason=reason)
            return None
        seconds = time.time() - ref.moment
        main.used(job.camera_id, seconds=seconds)
        if log.isEnabledFor(logging.DEBUG):
            steps = ", ".join(f"{name} {value:.3f}" for name, value in timings.items())
            log.debug(
                "camera %s: snapshot of %s from the main stream %.3f s after the face (%s)",
                job.camera_id,
                job.event_id,
                seconds,
                steps,
            )
        return jpeg

    def _fall_back(self, job: SnapshotJob, *, reason: str) -> None:
        """Count and log (powers of two) a main-stream snapshot that was not had."""
        assert self._main is not None  # noqa: S101 - only main-stream jobs get here
        self._main.fallback(job.camera_id)
        self._fallbacks += 1
        if every_power_of_two(self._fallbacks):
            log.warning(
                "camera %s: snapshot of %s from the main stream failed (%s); the "
                "detected stream's picture is used (fallbacks so far: %d)",
                job.camera_id,
                job.event_id,
                reason,
                self._fallbacks,
            )

    def _deliver(self, result: SnapshotResult) -> None:
        try:
            self._on_result(result)
        except Exception:
            # A bug in the receiver must not stop every later snapshot.
            log.exception("snapshots: the result handler failed for %s", result.job.event_id)

    async def _prune(self) -> None:
        store = self._store
        if store is None:
            return
        with contextlib.suppress(Exception):
            # A failure here shows again, and is reported, at the next write.
            await asyncio.to_thread(store.prune)


def _lower_priority() -> None:
    """In the worker's thread, at its start: WORKER_NICE for this thread only."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except OSError as exc:
        log.warning("snapshots: cannot lower the worker's priority: %s", exc)


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
