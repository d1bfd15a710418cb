"""Snapshot jobs rendered and stored off the event loop: one at a time, in order, bounded.

The loop hands a job over with `submit` (never blocks; refuses when `max_queued` jobs wait,
so a burst of tracks cannot grow memory: each job holds a full-size picture). `run`, a task
of the service's TaskGroup, takes the jobs first in, first out and renders and stores each
in a worker thread; one at a time, because snapshots must not take the cores the decoders
and the detector need, and so each camera's snapshots come out in the order asked for. The
result goes back to `on_result` on the loop: a failure is a result with `error`, never an
exception that would end the TaskGroup.

A job with `main` (a camera detected on its substream, mainframe.py) is rendered from the
main stream's picture; when that fails for any reason the job falls back to its own
(substream) picture, the result says `source="detect"`, and the fallback is counted and
logged (powers of two).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
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
        # stop marker even when the queue is full.
        # Each job with its submission time (time.monotonic()), for its queue wait.
        self._queue: asyncio.Queue[tuple[SnapshotJob, float] | None] = asyncio.Queue()
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
        """Queue `job` (on the loop, never blocks); False when full or closing."""
        if self._closing or self._queue.qsize() >= self._max_queued:
            return False
        self._queue.put_nowait((job, time.monotonic()))
        return True

    async def run(self) -> None:
        """Take jobs in order until `close()`; never raises but CancelledError."""
        # One get() waits across the idle timeouts: cancelling it at a timeout (wait_for)
        # could lose a job that arrived in the same instant on older Pythons.
        getter: asyncio.Future[tuple[SnapshotJob, float] | None] | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter}, timeout=self._prune_interval_s)
                if not done:
                    await self._prune()
                    continue
                item, getter = getter.result(), None
                try:
                    if item is None:
                        return
                    result = await asyncio.to_thread(self._process, *item)
                    self._deliver(result)
                finally:
                    self._queue.task_done()
        finally:
            if getter is not None:
                getter.cancel()

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
                item = self._queue.get_nowait()
                self._queue.task_done()
                if item is not None:
                    dropped += 1
                    error = "not rendered: the service was stopping"
                    self._deliver(SnapshotResult(item[0], None, error, None))
            if dropped:
                log.warning("snapshots: %d queued jobs were dropped at shutdown", dropped)
        self._queue.put_nowait(None)

    def _process(self, job: SnapshotJob, submitted: float) -> SnapshotResult:
        """In the worker thread: render, then store; failures become the result's error."""
        timings = {"queue": time.monotonic() - submitted}
        jpeg = self._render_main(job, timings=timings) if job.main is not None else None
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

    def _render_main(self, job: SnapshotJob, *, timings: dict[str, float]) -> bytes | None:
        """The JPEG from the main stream, or None (counted and logged: the caller falls
        back to the job's own picture). Adds its steps' seconds to `timings`."""
        main, ref = self._main, job.main
        assert main is not None and ref is not None  # noqa: S101 - prepare() attached it
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
            main.fallback(job.camera_id)
            self._fallbacks += 1
            if every_power_of_two(self._fallbacks):
                reason = str(exc) if isinstance(exc, MainStreamMissError) else _describe(exc)
                log.warning(
                    "camera %s: snapshot of %s from the main stream failed (%s); the "
                    "detected stream's picture is used (fallbacks so far: %d)",
                    job.camera_id,
                    job.event_id,
                    reason,
                    self._fallbacks,
                )
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


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
