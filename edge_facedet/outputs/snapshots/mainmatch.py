"""Which main-stream frame shows the moment of the substream frame a face was detected in.

Two clocks, the better one the streams allow:

* RTCP. A camera's sender reports map each stream's RTP time to its own wall clock, and its
  two encoders stamp one sensor frame alike, so the main frame nearest the substream
  frame's time on that clock is the one. Used when both streams have it: the main-stream
  reader hands the ring FFmpeg's `start_time_realtime`, and a substream read with
  `decoder: pyav` stamps its pictures (`PyAvPicture.wall_time`).
* Arrival. Otherwise both are on the host's clock of arrival, which the two streams reach
  with different delays (encoders, frame sizes, network): the main frames in a window around
  the moment are compared with the substream picture where the face is (a moving face tells
  neighbouring frames apart, where whole pictures at a coarse size do not), the nearer in
  time winning unless another is clearly more alike. The offset found is learned per camera
  (the median of the recent ones) and, once known, the window narrows around it, so a
  snapshot waits for fewer frames after the moment.

Pure numpy and OpenCV on decoded frames; the snapshot worker's thread.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_facedet.outputs.snapshots.fov import view_match, view_of

if TYPE_CHECKING:
    from av.video.frame import VideoFrame
    from numpy.typing import NDArray

    from edge_facedet.config.mainstream import FieldOfView
    from edge_facedet.outputs.snapshots.maindecode import MainFrame
    from edge_facedet.sources.packetring import Window
    from edge_facedet.tracking.events import Box

__all__ = [
    "MATCH_WINDOW_S",
    "NARROW_WINDOW_S",
    "TIME_PENALTY",
    "FrameMatcher",
    "Target",
    "luma",
    "view_similarity",
]

log = logging.getLogger(__name__)

MATCH_WINDOW_S = 0.4
"""Main frames this far either side of the moment are compared while the camera's offset is
unknown: wider than two encoders usually differ."""
NARROW_WINDOW_S = 0.16
"""The window once the offset is learned: a few frames either side of it."""
LEARNED_AFTER = 8
"""Offsets seen before the window narrows around their median."""
TIME_PENALTY = 0.05
"""Similarity given up per window half-width of distance from the window's centre."""
FRAME_S = 0.04
"""The frame period assumed where the frames held do not show it (25 fps)."""
_LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "nv12"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where the matching frame is looked for, on the arrival clock of the main stream."""

    centre: float
    within: float
    clock: str
    """"rtcp" or "arrival"."""
    pts: float | None = None
    """RTCP: the main-stream pts of the substream frame's moment."""

    @property
    def earliest(self) -> float:
        """Where the frames a decoder must still hold begin: the narrow window's edge even
        while the search is wider (the frames further out are a fallback, not needed)."""
        return self.centre - min(self.within, NARROW_WINDOW_S)

    @property
    def until(self) -> float:
        return self.centre + self.within


class FrameMatcher:
    """One camera's frame matching and its learned offset (see the module docstring)."""

    def __init__(self, *, camera_id: str) -> None:
        self._camera_id = camera_id
        self._offsets: deque[float] = deque(maxlen=16)
        self._connection = 0
        self.lead = -MATCH_WINDOW_S
        """Where, relative to a face's moment, the frames looked at begin (the learned
        offset less the window): the snapshot's packets are pinned from the keyframe
        before it. Written by the worker thread, read by the loop (one float)."""

    def target(
        self, window: Window, *, realtime: float | None, moment: float, wall_time: float | None
    ) -> Target:
        """Where to look for the frame of `moment` (the substream frame's arrival time;
        `wall_time` its RTCP time, `realtime` the main stream's RTCP time of pts 0)."""
        if window.info.connection != self._connection:
            self._connection = window.info.connection
            self._offsets.clear()  # another connection, another delay
            self.lead = -MATCH_WINDOW_S
        clock = _arrival_clock(window)
        if realtime is not None and wall_time is not None and clock is not None:
            pts = (wall_time - realtime) / window.info.time_base
            return Target(
                centre=clock + pts * window.info.time_base,
                within=FRAME_S / 2,
                clock="rtcp",
                pts=pts,
            )
        if len(self._offsets) >= LEARNED_AFTER:
            offset = statistics.median(self._offsets)
            return Target(centre=moment + offset, within=NARROW_WINDOW_S, clock="arrival")
        return Target(centre=moment, within=MATCH_WINDOW_S, clock="arrival")

    def learn(self, offset: float) -> None:
        """The chosen frame's time minus the substream frame's, on the arrival clock."""
        self._offsets.append(offset)
        if len(self._offsets) >= LEARNED_AFTER:
            learned = statistics.median(self._offsets)
            if len(self._offsets) == LEARNED_AFTER:
                log.info(
                    "camera %s: the main stream's frames arrive %+.3f s after the substream's "
                    "(median of %d snapshots); frames are now looked for around that offset",
                    self._camera_id,
                    learned,
                    LEARNED_AFTER,
                )
            self.lead = learned - NARROW_WINDOW_S

    def choose(
        self,
        frames: list[MainFrame],
        *,
        target: Target,
        detected: NDArray[np.uint8],
        box: Box,
        view: FieldOfView | None,
    ) -> MainFrame | None:
        """The frame of the target's moment among `frames` (None when there is none)."""
        if not frames:
            return None
        if target.clock == "rtcp" and target.pts is not None:
            pts = target.pts
            nearest = min(frames, key=lambda item: abs(item.pts - pts))
            # More than half a frame away: the frame of the moment is not among them.
            return nearest if abs(nearest.time - target.centre) <= 0.6 * _period(frames) else None
        near = [item for item in frames if abs(item.time - target.centre) <= target.within]
        if not near:
            return None
        reference, region = _face_region(detected, box=box)
        scores = [
            _score(item.frame, reference=reference, region=region, view=view) for item in near
        ]
        weighted = [
            score - TIME_PENALTY * abs(item.time - target.centre) / target.within
            for score, item in zip(scores, near, strict=True)
        ]
        return near[int(np.argmax(weighted))]


def luma(frame: VideoFrame) -> NDArray[np.uint8]:
    """The frame's luma plane without a conversion where its pixel format allows."""
    if frame.format.name not in _LUMA_FORMATS:
        return np.asarray(frame.to_ndarray(format="gray"), np.uint8)
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def view_similarity(
    frame: VideoFrame, detected: NDArray[np.uint8], *, view: FieldOfView | None
) -> float:
    """Whole pictures compared at a coarse size, for the view check (fov.view_match)."""
    return view_match(view_of(luma(frame), view=view), detected)


def _arrival_clock(window: Window) -> float | None:
    base = window.info.time_base
    offsets = [
        packet.arrival - stamp * base
        for packet in window.packets
        if (stamp := packet.dts if packet.dts is not None else packet.pts) is not None
    ]
    return min(offsets) if offsets else None


def _period(frames: list[MainFrame]) -> float:
    if len(frames) < 2:
        return FRAME_S
    return float(np.median(np.diff([item.time for item in frames]))) or FRAME_S


def _face_region(detected: NDArray[np.uint8], *, box: Box) -> tuple[NDArray[np.float32], Box]:
    """The substream picture around the face (twice its size), grey, zero mean, unit
    norm; and that region normalised."""
    height, width = detected.shape[:2]
    x_min, y_min, x_max, y_max = box
    half_w, half_h = (x_max - x_min), (y_max - y_min)
    centre_x, centre_y = (x_min + x_max) / 2, (y_min + y_max) / 2
    region = (
        max(0.0, centre_x - half_w),
        max(0.0, centre_y - half_h),
        min(1.0, centre_x + half_w),
        min(1.0, centre_y + half_h),
    )
    left, top = int(region[0] * width), int(region[1] * height)
    right = max(left + 8, int(region[2] * width))
    bottom = max(top + 8, int(region[3] * height))
    gray = detected if detected.ndim == 2 else cv2.cvtColor(detected, cv2.COLOR_BGR2GRAY)
    return _normalised(gray[top:bottom, left:right]), region


def _score(
    frame: VideoFrame, *, reference: NDArray[np.float32], region: Box, view: FieldOfView | None
) -> float:
    plane = luma(frame)
    height, width = plane.shape
    x_min, y_min, x_max, y_max = region
    if view is not None:
        x_min, x_max = view.x + x_min * view.w, view.x + x_max * view.w
        y_min, y_max = view.y + y_min * view.h, view.y + y_max * view.h
    left, top = int(x_min * width), int(y_min * height)
    right, bottom = max(left + 1, int(x_max * width)), max(top + 1, int(y_max * height))
    size = (reference.shape[1], reference.shape[0])
    patch = cv2.resize(plane[top:bottom, left:right], size, interpolation=cv2.INTER_AREA)
    return float(np.sum(_normalised(patch) * reference))


def _normalised(image: NDArray[np.generic]) -> NDArray[np.float32]:
    values = image.astype(np.float32)
    values -= float(values.mean())
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 0 else values
