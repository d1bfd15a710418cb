"""A snapshot's face taken from the camera's main stream instead of the detected substream.

Two halves, on two threads:

* `attach` (event loop, microseconds): when a track's snapshot is asked for, pin the main
  stream's packets from the last keyframe shown before the frames to look at
  (`PacketRing.window`, a list copy of references), or say why the main stream cannot
  serve it (down, evicted, behind, views that do not match). The event is published with
  this answer as its `snapshot_source`, so it is decided on the packets in hand.
* `take` (the snapshot worker's thread): decode the packets up to the moment with the
  camera's decoder cursor (maindecode.py: the snapshots of one GOP share one decoding pass),
  waiting (bounded by `max_wait_s`) for packets still to come; pick the frame of the
  moment (mainmatch.py: on the camera's RTCP clock where both streams have it, else by
  arrival, comparing the face's surroundings; the offset found is learned, logged and
  exported); map the box, refine it with the detector on the face's region (refine.py),
  and hand back the main picture and the box for outputs/snapshots/render.py. Any failure
  raises `MainStreamMissError`; the worker then renders the substream's picture (counted
  as `fallback`, logged).

The view check (viewcheck.py) runs on the first snapshots of each main-stream connection:
pictures that do not match the substream's (cropped, letterboxed, another camera) are
warned about, and without `main_stream.map` that connection's snapshots stay on the
substream.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge_facedet.frames import ArrayPicture
from edge_facedet.outputs.snapshots.fov import map_box
from edge_facedet.outputs.snapshots.maindecode import CursorPool
from edge_facedet.outputs.snapshots.mainmatch import FrameMatcher, view_similarity
from edge_facedet.outputs.snapshots.mainmiss import MainStreamMissError
from edge_facedet.outputs.snapshots.refine import refine_box
from edge_facedet.outputs.snapshots.viewcheck import ViewCheck
from edge_facedet.sources.packetring import Window

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import NDArray

    from edge_facedet.config.mainstream import MainStreamConfig
    from edge_facedet.frames import Picture
    from edge_facedet.outputs.snapshots.maindecode import GopCursor, MainFrame
    from edge_facedet.outputs.snapshots.mainmatch import Target
    from edge_facedet.outputs.snapshots.refine import FaceFinder
    from edge_facedet.sources.packetring import PacketRing
    from edge_facedet.tracking.events import Box

__all__ = [
    "MainPicture",
    "MainSnapshotWatcher",
    "MainStreamMissError",
    "MainStreamRef",
    "MainStreams",
]

log = logging.getLogger(__name__)

MAX_CURSORS = 4
"""Decoders (and their last frames) the worker keeps between snapshots, two per camera at
most (maindecode.CursorPool); each holds up to CURSOR_FRAMES full-size frames."""
CURSOR_FRAMES = 16
CURSOR_IDLE_S = 10.0
"""A cursor unused this long is dropped (its GOP has usually left the ring by then)."""


class MainSnapshotWatcher(Protocol):
    """Where outcomes go (outputs.metrics.MainStreamMetrics); thread-safe."""

    def snapshot(self, camera_id: str, result: str) -> None: ...

    def offset(self, camera_id: str, seconds: float) -> None: ...

    def latency(self, camera_id: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MainStreamRef:
    """A snapshot job's pinned main-stream packets (see `MainStreams.attach`)."""

    window: Window
    moment: float
    """The substream frame's capture time, on the wall clock (s)."""
    settings: MainStreamConfig


@dataclass(frozen=True, slots=True)
class MainPicture:
    picture: Picture
    box_norm: Box
    boxes_norm: tuple[Box, ...]
    refined: bool
    offset_s: float
    """The chosen main frame's time minus the substream frame's."""
    box_px: tuple[float, float, float, float]
    clock: str = "arrival"
    """How the frame was matched: "rtcp" or "arrival" (mainmatch.py)."""
    decoded: int = 0
    """Frames this snapshot decoded (0: all were held from an earlier one)."""
    restarted: bool = False
    """Whether it decoded from a keyframe afresh rather than where the last one stopped."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step of `take` (wait, decode, match, convert, refine), for the log."""


@dataclass(slots=True)
class _Camera:
    ring: PacketRing
    settings: MainStreamConfig
    view: ViewCheck
    matcher: FrameMatcher


class MainStreams:
    """Every main-stream camera's ring and settings; `attach` on the loop, `take` on the
    worker thread."""

    def __init__(
        self,
        *,
        cameras: Mapping[str, tuple[PacketRing, MainStreamConfig]],
        finder: FaceFinder | None,
        watcher: MainSnapshotWatcher,
    ) -> None:
        self._cameras = {
            camera_id: _Camera(
                ring=ring,
                settings=settings,
                view=ViewCheck(
                    camera_id=camera_id,
                    explicit=settings.map is not None,
                    span_s=settings.view_check_s,
                ),
                matcher=FrameMatcher(camera_id=camera_id),
            )
            for camera_id, (ring, settings) in cameras.items()
        }
        self._finder = finder
        self._watcher = watcher
        self._cursors = CursorPool(
            per_camera=2, limit=MAX_CURSORS, keep=CURSOR_FRAMES, idle_s=CURSOR_IDLE_S
        )

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self._cameras

    def attach(self, camera_id: str, *, moment: float) -> MainStreamRef | None:
        """The main-stream packets for a snapshot at `moment`, or None (counted: why)."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return None
        window = camera.ring.window(moment=moment + camera.matcher.lead)
        if window == "evicted":
            # The frames just before the moment are gone (a connection's first keyframe
            # came after them): the moment itself may still be held.
            window = camera.ring.window(moment=moment)
        reason = self._refusal(camera, window=window, moment=moment)
        if reason is not None:
            self._watcher.snapshot(camera_id, reason)
            return None
        assert isinstance(window, Window)  # noqa: S101 - _refusal said so
        return MainStreamRef(window=window, moment=moment, settings=camera.settings)

    def used(self, camera_id: str, *, seconds: float) -> None:
        """A main-stream snapshot was rendered `seconds` after the face's moment."""
        self._watcher.snapshot(camera_id, "main")
        self._watcher.latency(camera_id, seconds)

    def fallback(self, camera_id: str) -> None:
        """An attached main-stream snapshot failed; the substream's picture was used."""
        self._watcher.snapshot(camera_id, "fallback")

    def _refusal(self, camera: _Camera, *, window: Window | str, moment: float) -> str | None:
        if isinstance(window, str):
            return "down" if window == "empty" else window
        if camera.view.refuses(window.info.connection):
            return "fov_mismatch"
        if window.newest_arrival < min(moment, time.time()) - camera.settings.max_wait_s:
            return "behind"
        return None

    def take(
        self, camera_id: str, *, ref: MainStreamRef, detected: Picture, boxes_norm: tuple[Box, ...]
    ) -> MainPicture:
        """The main picture for `ref` and the best face's box in it (`boxes_norm[0]`,
        then the frame's other faces); MainStreamMissError when it cannot be had."""
        camera = self._cameras[camera_id]
        settings = ref.settings
        timings: dict[str, float] = {}
        picture = detected.to_bgr()
        target = camera.matcher.target(
            ref.window,
            realtime=camera.ring.realtime(ref.window.info),
            moment=ref.moment,
            wall_time=getattr(detected, "wall_time", None),
        )
        try:
            cursor = self._cursors.cursor(camera_id, ref.window, earliest=target.earliest)
        except Exception as exc:  # noqa: BLE001 - a decoder that cannot be made is a miss
            raise MainStreamMissError(f"decoder failed: {type(exc).__name__}: {exc}") from None
        decoded = cursor.decoded
        frames, connection = self._frames(cursor, camera, ref, target, timings=timings)
        started = time.monotonic()
        chosen, target = self._choose(
            camera_id, matcher=camera.matcher, ref=ref, target=target, frames=frames,
            picture=picture, box=boxes_norm[0],
        )  # fmt: skip
        offset = chosen.time - ref.moment
        camera.matcher.learn(offset)
        self._watcher.offset(camera_id, offset)

        def score() -> float:
            return view_similarity(chosen.frame, picture, view=settings.map)

        if not camera.view.check(connection, score=score):
            raise MainStreamMissError("the main stream shows another view")
        matched = time.monotonic()
        image = np.asarray(chosen.frame.to_ndarray(format="bgr24"), np.uint8)
        converted = time.monotonic()
        taken = self._boxes(image, boxes_norm=boxes_norm, settings=settings, offset=offset)
        timings.update(
            match=matched - started,
            convert=converted - matched,
            refine=time.monotonic() - converted,
        )
        return dataclasses.replace(
            taken,
            clock=target.clock,
            decoded=cursor.decoded - decoded,
            restarted=cursor.fresh,
            timings=timings,
        )

    def _choose(
        self,
        camera_id: str,
        *,
        matcher: FrameMatcher,
        ref: MainStreamRef,
        target: Target,
        frames: list[MainFrame],
        picture: NDArray[np.uint8],
        box: Box,
    ) -> tuple[MainFrame, Target]:
        """The frame of the face's moment and how it was found; MainStreamMissError."""
        choose = functools.partial(
            matcher.choose, frames, detected=picture, box=box, view=ref.settings.map
        )
        chosen = choose(target=target)
        if chosen is None and target.clock == "rtcp":
            # The clocks disagree with what arrived (a camera's clock jump): by arrival.
            target = matcher.target(ref.window, realtime=None, moment=ref.moment, wall_time=None)
            chosen = choose(target=target)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "camera %s: %s clock, looked %+.3f s +- %.3f from the face's moment among "
                "%d frames (%s), chose %s",
                camera_id,
                target.clock,
                target.centre - ref.moment,
                target.within,
                len(frames),
                " ".join(f"{item.time - ref.moment:+.3f}" for item in frames),
                "none" if chosen is None else f"{chosen.time - ref.moment:+.3f}",
            )
        if chosen is None:
            raise MainStreamMissError("no main-stream frame near the face's moment (behind?)")
        return chosen, target

    def _frames(
        self,
        cursor: GopCursor,
        camera: _Camera,
        ref: MainStreamRef,
        target: Target,
        *,
        timings: dict[str, float],
    ) -> tuple[list[MainFrame], int]:
        """The frames held around the target once decoded up to it, waiting (bounded by
        `max_wait_s`) for the packets still to come; and the connection they are of."""
        window = ref.window
        timings.update(wait=0.0, decode=0.0)
        deadline = time.monotonic() + ref.settings.max_wait_s
        try:
            while True:
                started = time.monotonic()
                done = cursor.feed(window, until=target.until)
                timings["decode"] += time.monotonic() - started
                remaining = deadline - time.monotonic()
                if done or remaining <= 0:
                    break
                started = time.monotonic()
                longer = camera.ring.extend(
                    window, until=window.newest_arrival, timeout_s=remaining
                )
                timings["wait"] += time.monotonic() - started
                if len(longer.packets) == len(window.packets):
                    break  # nothing came in time, or a new connection or a gap
                window = longer
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss
            raise MainStreamMissError(f"decoding failed: {type(exc).__name__}: {exc}") from None
        return cursor.frames, window.info.connection

    def _boxes(
        self,
        image: NDArray[np.uint8],
        *,
        boxes_norm: tuple[Box, ...],
        settings: MainStreamConfig,
        offset: float,
    ) -> MainPicture:
        height, width = image.shape[:2]
        mapped = [map_box(box, view=settings.map) for box in boxes_norm]
        best = mapped[0]
        best_px = (best[0] * width, best[1] * height, best[2] * width, best[3] * height)
        refined = False
        if self._finder is not None:
            found = refine_box(image, mapped=best_px, finder=self._finder)
            best_px, refined = found.box, found.refined
        best_norm = (
            best_px[0] / width,
            best_px[1] / height,
            best_px[2] / width,
            best_px[3] / height,
        )
        return MainPicture(
            picture=ArrayPicture(np.ascontiguousarray(image, dtype=np.uint8)),
            box_norm=best_norm,
            boxes_norm=tuple(mapped[1:]),
            refined=refined,
            offset_s=offset,
            box_px=best_px,
        )
