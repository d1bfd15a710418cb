"""One camera's faces across processed frames: ByteTrack's two stages on a Kalman filter.

Each `update` predicts every track to the frame's time, then associates:

1. detections at or above `high_confidence` with every track, by IoU of the predicted box;
   those left are then tried by centre distance (gated by distance and size), for a face
   that moved about its own width or more since the last processed frame before its
   velocity is known (1 frame/s, or frames dropped);
2. detections in [`low_confidence`, `high_confidence`) with the confirmed tracks still
   unmatched, by a stricter IoU: a face turning away keeps its track, but a weak box never
   starts one or confirms one.

High detections left over start tentative tracks. A tentative track must be detected in the
next processed frame or it is dropped silently (ByteTrack's rule: a one-frame false
positive never becomes a track); it is confirmed at `min_hits` detections. A confirmed track
that is not seen keeps being predicted, so a face passing behind another is picked up
again, until `max_age_s` after its last detection; it then ends.

Time is the frame's monotonic time in seconds. A frame at or before the previous one's time
is taken as no time passing: a clock step must not crash the tracker or reorder tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_facedet.tracking.association import (
    centre_distance_matrix,
    iou_matrix,
    match,
    match_nearest,
)
from edge_facedet.tracking.kalman import BoxFilters

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge_facedet.config.tracking import TrackingConfig

__all__ = ["FaceTracker", "TrackedFace", "TrackerSettings", "TrackerStep"]

_FALLBACK_MAX_DISTANCE = 2.0
"""How far (in the track box's widths/heights) a detection may be from a track's predicted
centre to be taken by distance when IoU did not match it: covers a face moving up to twice
its width between processed frames before its velocity is known."""
_FALLBACK_MAX_SIZE_RATIO = 1.5
"""...and how much its size may differ: a face far behind or right in front is another."""


MIN_AGE_PERIODS = 6
"""A track lives at least this many detect periods after its last detection, whatever
`tracking.max_age_s` says: at 2 detections/s a face partly out of the frame was missed for
2.5 s, and its track ended at the 2 s default (tools/trackscore, edge occlusion)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerSettings:
    high_confidence: float
    """Detections at or above this start tracks and match in stage 1."""
    low_confidence: float
    """Detections in [low, high) only extend confirmed tracks left unmatched (stage 2)."""
    match_iou: float = 0.2
    """Least IoU of a track's predicted box and a detection in stage 1."""
    low_match_iou: float = 0.4
    """Least IoU in stage 2: stricter, the boxes are less certain."""
    min_hits: int = 2
    """Detections before a track is confirmed."""
    max_age_s: float = 2.0
    """A track unmatched for longer than this is removed."""

    def __post_init__(self) -> None:
        if not 0.0 < self.low_confidence <= self.high_confidence:
            raise ValueError("need 0 < low_confidence <= high_confidence")
        if not (0.0 < self.match_iou <= 1.0 and 0.0 < self.low_match_iou <= 1.0):
            raise ValueError("match_iou and low_match_iou must be in (0, 1]")
        if self.min_hits < 1:
            raise ValueError("min_hits must be >= 1")
        if not self.max_age_s > 0.0:
            raise ValueError("max_age_s must be > 0")

    @classmethod
    def from_config(
        cls, *, confidence_threshold: float, tracking: TrackingConfig, detect_fps: float
    ) -> TrackerSettings:
        """A camera's settings: its detection threshold starts tracks, `tracking` the rest;
        a track lives at least `MIN_AGE_PERIODS` of the camera's detect periods."""
        return cls(
            high_confidence=confidence_threshold,
            low_confidence=tracking.low_confidence,
            match_iou=tracking.match_iou,
            min_hits=tracking.min_hits,
            max_age_s=max(tracking.max_age_s, MIN_AGE_PERIODS / detect_fps),
        )


@dataclass(frozen=True, slots=True)
class TrackedFace:
    track_id: int
    """Counted from 1 per tracker, never reused by it."""
    detection_index: int
    """The row of the boxes and confidences given to `update`."""
    confirmed: bool
    """hits >= min_hits; stays True once reached."""
    hits: int


@dataclass(frozen=True, slots=True)
class TrackerStep:
    faces: tuple[TrackedFace, ...]
    """One entry per track matched or started in this update, ascending by detection."""
    confirmed: tuple[int, ...]
    """Track ids confirmed in this update."""
    ended: tuple[int, ...]
    """Confirmed track ids removed in this update (lost); tentative ones vanish silently."""


@dataclass(slots=True, kw_only=True)
class _Track:
    """What a track is beyond its box; the box is its row of the tracker's `BoxFilters`."""

    track_id: int
    hits: int
    confirmed: bool
    last_seen: float
    """Time of the latest detection."""


class FaceTracker:
    """One camera's tracks; not thread-safe (one camera's results arrive in order)."""

    def __init__(self, *, settings: TrackerSettings) -> None:
        self._settings = settings
        self._tracks: list[_Track] = []
        self._filters = BoxFilters()
        """Row i is the box of `_tracks[i]`; both change together in `_start` and `_remove`."""
        self._next_id = 1
        self._time: float | None = None

    @property
    def open_confirmed(self) -> tuple[int, ...]:
        """Confirmed tracks not yet ended, seen in the latest frame or not."""
        return tuple(track.track_id for track in self._tracks if track.confirmed)

    @property
    def live_ids(self) -> tuple[int, ...]:
        """Every track held, tentative or confirmed: an id not here is gone for good."""
        return tuple(track.track_id for track in self._tracks)

    def update(
        self, *, boxes: NDArray[np.float32], confidences: NDArray[np.float32], t: float
    ) -> TrackerStep:
        """Associate one processed frame's detections (x_min, y_min, x_max, y_max in pixels).

        Detections below `low_confidence` are ignored; `t` should not decrease.
        """
        boxes_2d = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(confidences, dtype=np.float64).reshape(-1)
        if scores.shape[0] != boxes_2d.shape[0]:
            raise ValueError(f"{boxes_2d.shape[0]} boxes but {scores.shape[0]} confidences")
        now = self._advance(t)
        # Before matching: a face gone longer than max_age_s is not picked up again, even
        # when no frame came in between to notice it.
        ended = self.expire(t=now)
        high = np.flatnonzero(scores >= self._settings.high_confidence)
        low = np.flatnonzero(
            (scores >= self._settings.low_confidence) & (scores < self._settings.high_confidence)
        )
        predicted = self._filters.boxes
        matched, unmatched_high = self._stage_one(predicted, boxes_2d, high)
        matched += self._stage_two(predicted, boxes_2d, low, taken={r for r, _ in matched})

        faces: list[TrackedFace] = []
        confirmed: list[int] = []
        rows = [r for r, _ in matched]
        self._filters.update(rows=rows, boxes=boxes_2d[[d for _, d in matched]])
        for row, index in matched:
            track = self._tracks[row]
            if self._hit(track, now=now):
                confirmed.append(track.track_id)
            faces.append(TrackedFace(track.track_id, index, track.confirmed, track.hits))
        self._drop_unseen_tentative(seen=rows)
        for index in unmatched_high:
            track = self._start(box=boxes_2d[index], now=now)
            if track.confirmed:
                confirmed.append(track.track_id)
            faces.append(TrackedFace(track.track_id, index, track.confirmed, track.hits))
        faces.sort(key=lambda face: face.detection_index)
        return TrackerStep(faces=tuple(faces), confirmed=tuple(confirmed), ended=ended)

    def expire(self, *, t: float) -> tuple[int, ...]:
        """Remove tracks unseen for more than `max_age_s` at `t`, with no frame to process.

        For a camera whose frames stopped; returns the confirmed ids removed.
        """
        max_age_s = self._settings.max_age_s
        gone = [t - track.last_seen > max_age_s for track in self._tracks]
        return self._remove(gone) if any(gone) else ()

    def close_all(self) -> tuple[int, ...]:
        """Remove every track; returns the confirmed ids among them."""
        return self._remove([True] * len(self._tracks))

    def _advance(self, t: float) -> float:
        """Predict every track to `t`; returns the tracker's time (never earlier than before)."""
        now = t if self._time is None else max(t, self._time)
        self._filters.predict(dt_s=0.0 if self._time is None else now - self._time)
        self._time = now
        return now

    def _stage_one(
        self, predicted: NDArray[np.float64], boxes: NDArray[np.float64], high: NDArray[np.intp]
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """High detections against every track: by IoU, then by centre distance.

        Returns (track row, detection index) pairs and the high detections left over.
        """
        if not len(predicted) or not high.size:
            return [], [int(index) for index in high]
        by_iou = match(iou_matrix(predicted, boxes[high]), min_iou=self._settings.match_iou)
        matched = [(r, int(high[c])) for r, c in by_iou.pairs]
        rest_rows, rest_cols = list(by_iou.unmatched_rows), list(by_iou.unmatched_cols)
        if not rest_rows or not rest_cols:
            return matched, [int(high[c]) for c in rest_cols]
        distance = centre_distance_matrix(
            predicted[rest_rows],
            boxes[high[rest_cols]],
            max_size_ratio=_FALLBACK_MAX_SIZE_RATIO,
        )
        near = match_nearest(distance, max_distance=_FALLBACK_MAX_DISTANCE)
        matched += [(rest_rows[r], int(high[rest_cols[c]])) for r, c in near.pairs]
        return matched, [int(high[rest_cols[c]]) for c in near.unmatched_cols]

    def _stage_two(
        self,
        predicted: NDArray[np.float64],
        boxes: NDArray[np.float64],
        low: NDArray[np.intp],
        *,
        taken: set[int],
    ) -> list[tuple[int, int]]:
        """Low detections against the confirmed tracks stage 1 left unmatched, by IoU."""
        candidates = [
            row for row, track in enumerate(self._tracks) if track.confirmed and row not in taken
        ]
        if not candidates or low.size == 0:
            return []
        iou = iou_matrix(predicted[candidates], boxes[low])
        by_iou = match(iou, min_iou=self._settings.low_match_iou)
        return [(candidates[r], int(low[c])) for r, c in by_iou.pairs]

    def _hit(self, track: _Track, *, now: float) -> bool:
        """Count a matched track's detection; True if it confirmed the track."""
        track.hits += 1
        track.last_seen = now
        if track.confirmed or track.hits < self._settings.min_hits:
            return False
        track.confirmed = True
        return True

    def _start(self, *, box: NDArray[np.float64], now: float) -> _Track:
        track = _Track(
            track_id=self._next_id,
            hits=1,
            confirmed=self._settings.min_hits <= 1,
            last_seen=now,
        )
        self._next_id += 1
        self._tracks.append(track)
        self._filters.add(boxes=box)
        return track

    def _drop_unseen_tentative(self, *, seen: list[int]) -> None:
        """Tentative tracks not seen in this frame (`seen`: distinct rows) go, silently;
        confirmed ones coast."""
        if len(seen) == len(self._tracks):
            return  # every track was seen: nothing to hold or drop
        seen_rows = set(seen)
        unseen = [row not in seen_rows for row in range(len(self._tracks))]
        self._filters.hold(rows=[row for row, gone in enumerate(unseen) if gone])
        drop = [
            gone and not track.confirmed for gone, track in zip(unseen, self._tracks, strict=True)
        ]
        if any(drop):
            self._remove(drop)

    def _remove(self, drop: NDArray[np.bool_] | list[bool]) -> tuple[int, ...]:
        """Drop the tracks (rows) marked True; returns the confirmed ids among them."""
        marked = np.asarray(drop, dtype=np.bool_).reshape(-1)
        if not marked.any():
            return ()
        ended = tuple(
            track.track_id
            for track, gone in zip(self._tracks, marked, strict=True)
            if gone and track.confirmed
        )
        self._tracks = [t for t, gone in zip(self._tracks, marked, strict=True) if not gone]
        self._filters.keep(rows=~marked)
        return ended
