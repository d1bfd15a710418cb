"""A snapshot's face taken from the camera's main stream instead of the detected substream.

Two halves, on two threads:

* `attach` (event loop, microseconds): when a track's snapshot is asked for, pin the main
  stream's packets from the last keyframe before the face's moment (`PacketRing.window`, a
  list copy of references), or say why the main stream cannot serve it (down, evicted,
  behind, views that do not match). The event is published with this answer as its
  `snapshot_source`, so it is decided on the packets in hand, not hoped for.
* `take` (the snapshot worker's thread): wait (bounded) for the packets up to the moment,
  decode them with a fresh decoder, pick among the frames near the moment the one most like
  the substream's picture (the two streams' arrival of one moment differ by the encoders'
  and the network's delays; the offset found is logged and exported), map the box, refine
  it with the detector on the face's region (refine.py), and hand back the main picture
  and the box for outputs/snapshots/render.py. Any failure raises `MainStreamMissError`; the
  worker then renders the substream's picture (counted as `fallback`, logged).

The view check runs on the first snapshot of each main-stream connection: a picture that
does not match the substream's (cropped, letterboxed, another camera) is warned about, and
without `main_stream.map` that connection's snapshots stay on the substream.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge_facedet.frames import ArrayPicture
from edge_facedet.outputs.snapshots.fov import (
    FOV_MIN_SIMILARITY,
    map_box,
    similarity,
    small_gray,
    view_of,
)
from edge_facedet.outputs.snapshots.maindecode import decode_near
from edge_facedet.outputs.snapshots.refine import refine_box
from edge_facedet.sources.packetring import Window

if TYPE_CHECKING:
    from collections.abc import Mapping

    from av.video.frame import VideoFrame
    from numpy.typing import NDArray

    from edge_facedet.config.mainstream import MainStreamConfig
    from edge_facedet.frames import Picture
    from edge_facedet.outputs.snapshots.refine import FaceFinder
    from edge_facedet.sources.packetring import PacketRing
    from edge_facedet.tracking.events import Box

__all__ = [
    "MATCH_WINDOW_S",
    "TIME_PENALTY",
    "MainPicture",
    "MainSnapshotWatcher",
    "MainStreamMissError",
    "MainStreamRef",
    "MainStreams",
]

log = logging.getLogger(__name__)

MATCH_WINDOW_S = 0.4
"""Main-stream frames this far either side of the substream frame's arrival are compared
with it: wider than two cameras' encoders usually differ, narrow enough to decode quickly."""


TIME_PENALTY = 0.05
"""Similarity given up per MATCH_WINDOW_S of distance from the substream frame's moment."""


class MainStreamMissError(Exception):
    """The main stream could not serve this snapshot; the message says why."""


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


@dataclass(slots=True)
class _Camera:
    ring: PacketRing
    settings: MainStreamConfig
    checked_connection: int = 0
    """The connection whose view was checked last (0: none yet)."""
    view_matches: bool = True


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
            camera_id: _Camera(ring=ring, settings=settings)
            for camera_id, (ring, settings) in cameras.items()
        }
        self._finder = finder
        self._watcher = watcher
        self._lock = threading.Lock()

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self._cameras

    def attach(self, camera_id: str, *, moment: float) -> MainStreamRef | None:
        """The main-stream packets for a snapshot at `moment`, or None (counted: why)."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return None
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
        with self._lock:
            mismatch = (
                camera.checked_connection == window.info.connection
                and not camera.view_matches
                and camera.settings.map is None
            )
        if mismatch:
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
        window = camera.ring.extend(
            ref.window, until=ref.moment + MATCH_WINDOW_S, timeout_s=settings.max_wait_s
        )
        try:
            frames = decode_near(window, moment=ref.moment, within_s=MATCH_WINDOW_S)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss
            raise MainStreamMissError(f"decoding failed: {type(exc).__name__}: {exc}") from None
        if not frames:
            raise MainStreamMissError("no main-stream frame near the face's moment (behind?)")
        target = small_gray(detected.to_bgr())
        # Compared on the luma plane alone; only the chosen frame is converted to BGR.
        scores = [
            similarity(small_gray(view_of(_luma(item.frame), view=settings.map)), target)
            for item in frames
        ]
        # Two pictures of one still scene score alike whatever their moment: the nearer
        # frame in time wins unless another is clearly more alike.
        weighted = [
            score - TIME_PENALTY * abs(item.time - ref.moment) / MATCH_WINDOW_S
            for score, item in zip(scores, frames, strict=True)
        ]
        index = int(np.argmax(weighted))
        score, chosen = scores[index], frames[index]
        image = np.asarray(chosen.frame.to_ndarray(format="bgr24"), np.uint8)
        self._check_view(camera_id, camera, connection=window.info.connection, score=score)
        if not camera.view_matches and settings.map is None:
            raise MainStreamMissError(f"the main stream shows another view ({score:.2f})")
        offset = chosen.time - ref.moment
        self._watcher.offset(camera_id, offset)
        return self._boxes(image, boxes_norm=boxes_norm, settings=settings, offset=offset)

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

    def _check_view(
        self, camera_id: str, camera: _Camera, *, connection: int, score: float
    ) -> None:
        with self._lock:
            if camera.checked_connection == connection:
                return
            camera.checked_connection = connection
            camera.view_matches = score >= FOV_MIN_SIMILARITY
        if camera.view_matches:
            log.info(
                "camera %s: the main stream shows the substream's view (similarity %.2f)",
                camera_id,
                score,
            )
            return
        action = (
            "using main_stream.map as configured"
            if camera.settings.map is not None
            else "snapshots stay on the substream for this connection; set main_stream.map "
            "to the substream's view inside the main picture, or main_stream.enabled: false"
        )
        log.warning(
            "camera %s: the main stream's picture does not match the substream's "
            "(similarity %.2f < %.2f): cropped, letterboxed or another camera? %s",
            camera_id,
            score,
            FOV_MIN_SIMILARITY,
            action,
        )


def _luma(frame: VideoFrame) -> NDArray[np.uint8]:
    return np.asarray(frame.to_ndarray(format="gray"), np.uint8)
