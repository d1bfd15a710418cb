"""One camera's face tracks over time: which detection is whose face, the best face, events.

`CameraTracks.observe` takes a processed frame's detections (down to the tracker's low
confidence), runs the camera's `FaceTracker`, keeps each track's latest and best sighting and
decides the events:

* `new` once a track is confirmed (`tracking.min_hits` detections), so a one-frame false
  positive never makes an event;
* `update` when the best face improved by `tracking.improvement` (relative quality) and
  `update_interval_s` passed since the track's last event, or when `max_update_interval_s`
  passed whatever happened;
* `end` when the tracker loses the track (`max_age_s` without a detection), when the camera
  goes down, and at shutdown (`end_all`): every track that had a `new` gets exactly one `end`.

A snapshot is asked for (`SnapshotRequest`) with `new`, with an `update` whose best face
changed, and with `end` if the best face changed since the last snapshot, so the last picture
published is always the track's best. Only cameras with snapshots on keep pictures.

Runs on the event loop, once per processed frame: the work is the tracker's assignment and a
quality score per tracked face (tracking.quality), microseconds each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from edge_facedet.config.mainstream import main_stream_active
from edge_facedet.config.snapshots import SnapshotMode
from edge_facedet.tracking.events import EndReason, EventType, Sighting, TrackEvent
from edge_facedet.tracking.keep import keep_face_region
from edge_facedet.tracking.quality import face_quality
from edge_facedet.tracking.tracker import FaceTracker, TrackerSettings

if TYPE_CHECKING:
    from datetime import datetime

    import numpy as np
    from numpy.typing import NDArray

    from edge_facedet.config import CameraConfig
    from edge_facedet.frames import Detections, Frame, Picture
    from edge_facedet.tracking.events import Box

__all__ = ["CameraTracks", "Observation", "SnapshotRequest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRequest:
    """A track's best face, to be rendered off the loop (outputs.snapshots)."""

    event_id: str
    picture: Picture
    box_norm: Box
    boxes_norm: tuple[Box, ...]
    """Every face in the best face's frame (blurred_frame blurs them all)."""
    time: datetime


@dataclass(frozen=True, slots=True)
class Observation:
    """What one processed frame changed."""

    track_ids: tuple[str | None, ...]
    """Per detection passed in: its confirmed track's id, or None."""
    events: tuple[TrackEvent, ...]
    snapshots: tuple[SnapshotRequest | None, ...]
    """Per event: the snapshot to publish with it, or None."""


@dataclass(slots=True, kw_only=True)
class _Track:
    event_id: str
    start_time: datetime
    frame_width: int
    frame_height: int
    last: Sighting
    best: Sighting
    best_picture: Picture | None
    """The best face's picture as keep.py keeps it (whole, or the face's region)."""
    best_box_in_picture: Box
    """The best box normalised to `best_picture` (the best's own box if that is whole)."""
    best_boxes_norm: tuple[Box, ...]
    frames_seen: int = 1
    announced: bool = False
    last_event_at: float = 0.0
    quality_at_last_event: float = 0.0
    snapshot_quality: float | None = None
    """The best face's quality when its snapshot was last asked for; None: never."""


class CameraTracks:
    """The tracks of one camera; see the module docstring."""

    def __init__(self, *, camera: CameraConfig, id_prefix: str) -> None:
        """`id_prefix` (node, camera and run ids) makes track ids unique across cameras,
        nodes and restarts, as `event_id` of the faces messages is."""
        self.camera_id = camera.id
        self._settings = camera.tracking
        self._keep_pictures = camera.snapshots.enabled
        # crop snapshots keep the face's region only (keep.py); the main stream matches the
        # whole substream picture against its frames, so it keeps the whole.
        self._crop_margin = (
            camera.snapshots.margin
            if camera.snapshots.mode is SnapshotMode.CROP and not main_stream_active(camera)
            else None
        )
        self._id_prefix = id_prefix
        settings = TrackerSettings.from_config(
            confidence_threshold=camera.confidence_threshold,
            tracking=camera.tracking,
            detect_fps=camera.detect_fps,
        )
        self._max_age_s = settings.max_age_s
        self._tracker = FaceTracker(settings=settings)
        self._tracks: dict[int, _Track] = {}

    @property
    def open_count(self) -> int:
        """Confirmed tracks open now (those a `new` was sent for)."""
        return sum(1 for track in self._tracks.values() if track.announced)

    def observe(self, *, frame: Frame, detections: Detections) -> Observation:
        """Track `detections` (of `frame`); the events they cause, with their snapshots."""
        now = frame.capture_monotonic
        step = self._tracker.update(
            boxes=detections.boxes_px, confidences=detections.confidences, t=now
        )
        events: list[TrackEvent] = []
        snapshots: list[SnapshotRequest | None] = []
        for track_id in step.ended:
            self._end(track_id, reason=EndReason.LOST, events=events, snapshots=snapshots)
        # Python floats once per frame (float32 to float is exact), not per face and field.
        boxes_norm = _boxes(detections.boxes_norm)
        boxes_px = _boxes(detections.boxes_px)
        confidences: list[float] = detections.confidences.tolist()
        track_ids: list[str | None] = [None] * len(detections)
        confirmed_now = set(step.confirmed)
        for face in step.faces:
            index = face.detection_index
            sighting = self._sighting(
                frame=frame,
                box_norm=boxes_norm[index],
                box_px=boxes_px[index],
                confidence=confidences[index],
            )
            track = self._tracks.get(face.track_id)
            if track is None:
                track = self._start(
                    face.track_id, frame=frame, sighting=sighting, boxes_norm=boxes_norm
                )
            else:
                self._extend(track, frame=frame, sighting=sighting, boxes_norm=boxes_norm)
            if face.confirmed:
                track_ids[index] = track.event_id
            if face.track_id in confirmed_now or (face.confirmed and not track.announced):
                self._emit(track, EventType.NEW, now=now, events=events, snapshots=snapshots)
            elif track.announced:
                self._maybe_update(track, now=now, events=events, snapshots=snapshots)
        # Tentative tracks the tracker dropped without an `ended` entry: forget them too.
        if len(self._tracks) > len(step.faces):
            live = set(self._tracker.live_ids)
            for track_id in [tid for tid in self._tracks if tid not in live]:
                del self._tracks[track_id]
        return Observation(tuple(track_ids), tuple(events), tuple(snapshots))

    def expire(self, *, now: float) -> Observation:
        """End the tracks lost by `now` (monotonic) when no frame came to notice it."""
        events: list[TrackEvent] = []
        snapshots: list[SnapshotRequest | None] = []
        for track_id in self._tracker.expire(t=now):
            self._end(track_id, reason=EndReason.LOST, events=events, snapshots=snapshots)
        return Observation((), tuple(events), tuple(snapshots))

    def end_all(self, *, reason: EndReason, at: datetime) -> Observation:
        """End every track (camera down, shutdown); `end` events for the announced ones."""
        events: list[TrackEvent] = []
        snapshots: list[SnapshotRequest | None] = []
        self._tracker.close_all()
        for track_id in list(self._tracks):
            self._end(track_id, reason=reason, events=events, snapshots=snapshots, at=at)
        self._tracks.clear()
        return Observation((), tuple(events), tuple(snapshots))

    # -- tracks --------------------------------------------------------------------------

    def _sighting(self, *, frame: Frame, box_norm: Box, box_px: Box, confidence: float) -> Sighting:
        quality = face_quality(
            image=frame.image,
            box_norm=box_norm,
            confidence=confidence,
            frame_width=frame.width,
            frame_height=frame.height,
        )
        return Sighting(
            time=frame.capture_time,
            box_px=box_px,
            box_norm=box_norm,
            confidence=confidence,
            quality=quality.score,
            height_px=quality.height_px,
        )

    def _start(
        self, track_id: int, *, frame: Frame, sighting: Sighting, boxes_norm: tuple[Box, ...]
    ) -> _Track:
        track = _Track(
            event_id=f"{self._id_prefix}-t{track_id}",
            start_time=sighting.time,
            frame_width=frame.width,
            frame_height=frame.height,
            last=sighting,
            best=sighting,
            best_picture=None,
            best_box_in_picture=sighting.box_norm,
            best_boxes_norm=boxes_norm,
        )
        self._keep_best(track, frame=frame)
        self._tracks[track_id] = track
        return track

    def _keep_best(self, track: _Track, *, frame: Frame) -> None:
        """Keep the picture of `track.best` (seen in `frame`) as this camera's mode needs."""
        box = track.best.box_norm
        picture = frame.picture if self._keep_pictures else None
        if picture is not None and self._crop_margin is not None:
            kept = keep_face_region(picture, box_norm=box, margin=self._crop_margin)
            picture, box = kept.picture, kept.box_norm
        track.best_picture, track.best_box_in_picture = picture, box

    def _extend(
        self, track: _Track, *, frame: Frame, sighting: Sighting, boxes_norm: tuple[Box, ...]
    ) -> None:
        track.last = sighting
        track.frames_seen += 1
        track.frame_width, track.frame_height = frame.width, frame.height
        if sighting.quality > track.best.quality:
            track.best = sighting
            track.best_boxes_norm = boxes_norm
            self._keep_best(track, frame=frame)

    def _maybe_update(
        self,
        track: _Track,
        *,
        now: float,
        events: list[TrackEvent],
        snapshots: list[SnapshotRequest | None],
    ) -> None:
        since = now - track.last_event_at
        improved = track.best.quality > track.quality_at_last_event * (
            1.0 + self._settings.improvement
        )
        if (improved and since >= self._settings.update_interval_s) or (
            since >= self._settings.max_update_interval_s
        ):
            self._emit(track, EventType.UPDATE, now=now, events=events, snapshots=snapshots)

    def _end(
        self,
        track_id: int,
        *,
        reason: EndReason,
        events: list[TrackEvent],
        snapshots: list[SnapshotRequest | None],
        at: datetime | None = None,
    ) -> None:
        track = self._tracks.pop(track_id, None)
        if track is None or not track.announced:
            return
        if at is None:  # lost: it ended when max_age_s had passed since its last detection
            at = track.last.time + timedelta(seconds=self._max_age_s)
        self._emit(
            track,
            EventType.END,
            now=track.last_event_at,
            events=events,
            snapshots=snapshots,
            end_reason=reason,
            end_time=at,
        )

    def _emit(
        self,
        track: _Track,
        kind: EventType,
        *,
        now: float,
        events: list[TrackEvent],
        snapshots: list[SnapshotRequest | None],
        end_reason: EndReason | None = None,
        end_time: datetime | None = None,
    ) -> None:
        request = self._snapshot_request(track)
        events.append(
            TrackEvent(
                type=kind,
                event_id=track.event_id,
                camera_id=self.camera_id,
                start_time=track.start_time,
                last_time=track.last.time,
                end_time=end_time,
                frames_seen=track.frames_seen,
                frame_width=track.frame_width,
                frame_height=track.frame_height,
                current=track.last,
                best=track.best,
                snapshot=request is not None,
                snapshot_source="detect" if request is not None else None,
                end_reason=end_reason,
            )
        )
        snapshots.append(request)
        track.announced = True
        track.last_event_at = now
        track.quality_at_last_event = track.best.quality

    def _snapshot_request(self, track: _Track) -> SnapshotRequest | None:
        picture = track.best_picture
        if picture is None or track.snapshot_quality == track.best.quality:
            return None
        track.snapshot_quality = track.best.quality
        box = track.best_box_in_picture
        # The face's region only (crop mode): the frame's other boxes do not apply to it.
        whole = box is track.best.box_norm
        return SnapshotRequest(
            event_id=track.event_id,
            picture=picture,
            box_norm=box,
            boxes_norm=(track.best_boxes_norm or (box,)) if whole else (box,),
            time=track.best.time,
        )


def _boxes(rows: NDArray[np.float32]) -> tuple[Box, ...]:
    """(N, 4) boxes as tuples of Python floats."""
    return tuple((x_min, y_min, x_max, y_max) for x_min, y_min, x_max, y_max in rows.tolist())
