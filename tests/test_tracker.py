"""The face tracker on synthetic boxes: ids that follow faces, and the ends they report.

No video: faces are boxes moving on known paths (with seeded detector jitter where it
matters), fed at the detect rates cameras run at (1-10 frames/s). What is checked is what
the events layer relies on: a face keeps its id while it is seen (and briefly while not), a
new face or a face gone too long gets a fresh id that was never used, a one-frame false
positive never shows, low-confidence boxes only extend tracks, and every confirmed track is
reported ended exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.tracking.association import iou_matrix, match
from edge_facedet.tracking.kalman import BoxFilters
from edge_facedet.tracking.tracker import (
    MIN_AGE_PERIODS,
    FaceTracker,
    TrackerSettings,
    TrackerStep,
)

HIGH, LOW = 0.6, 0.3
SIZE = 100.0


def make_tracker(**overrides: float) -> FaceTracker:
    options: dict[str, float] = {"high_confidence": HIGH, "low_confidence": LOW, **overrides}
    return FaceTracker(settings=TrackerSettings(**options))  # type: ignore[arg-type]


def box(cx: float, cy: float, size: float = SIZE) -> tuple[float, float, float, float]:
    half = size / 2
    return (cx - half, cy - half, cx + half, cy + half)


@dataclass(frozen=True)
class Det:
    box: tuple[float, float, float, float]
    confidence: float = 0.9


def feed(tracker: FaceTracker, *, t: float, dets: list[Det]) -> TrackerStep:
    boxes = np.array([d.box for d in dets], dtype=np.float32).reshape(-1, 4)
    confidences = np.array([d.confidence for d in dets], dtype=np.float32)
    return tracker.update(boxes=boxes, confidences=confidences, t=t)


def id_of(step: TrackerStep, detection_index: int) -> int | None:
    found = [f.track_id for f in step.faces if f.detection_index == detection_index]
    return found[0] if found else None


def all_ended(steps: list[TrackerStep]) -> list[int]:
    return [track_id for step in steps for track_id in step.ended]


# -- one face ------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [1, 2, 5, 10])
def test_a_face_moving_steadily_keeps_one_id_at_every_detect_rate(fps: int) -> None:
    # 1.5 face widths a second: at 1 and 2 frames/s the box overlaps its last position
    # little or not at all, so the id rests on the time-based prediction (and at 1 frame/s,
    # before the velocity is known, on the centre-distance fallback).
    rng = np.random.default_rng(fps)
    tracker = make_tracker()
    ids = set()
    for k in range(4 * fps):
        t = k / fps
        jitter = rng.normal(0.0, 0.03 * SIZE, size=2)
        step = feed(tracker, t=t, dets=[Det(box(1.5 * SIZE * t + jitter[0], 300 + jitter[1]))])
        assert len(step.faces) == 1
        ids.add(step.faces[0].track_id)
        assert not step.ended
    assert ids == {1}
    assert tracker.open_confirmed == (1,)


def test_a_face_is_confirmed_at_its_second_detection_even_at_one_frame_a_second() -> None:
    # ByteTrack drops a tentative track its next frame does not match; at 1 frame/s a face
    # that moved more than its width must still be matched by that next frame.
    tracker = make_tracker()
    first = feed(tracker, t=0.0, dets=[Det(box(100, 300))])
    second = feed(tracker, t=1.0, dets=[Det(box(100 + 1.8 * SIZE, 300))])
    assert first.faces[0].confirmed is False
    assert first.confirmed == ()
    assert second.confirmed == (1,)
    assert second.faces[0].track_id == 1
    assert second.faces[0].hits == 2


def test_a_face_jumping_further_than_the_fallback_allows_is_a_new_face() -> None:
    tracker = make_tracker()
    feed(tracker, t=0.0, dets=[Det(box(100, 300))])
    step = feed(tracker, t=1.0, dets=[Det(box(100 + 3 * SIZE, 300))])
    assert id_of(step, 0) == 2


def test_a_much_larger_box_nearby_is_not_taken_by_the_fallback() -> None:
    tracker = make_tracker()
    feed(tracker, t=0.0, dets=[Det(box(100, 300))])
    step = feed(tracker, t=1.0, dets=[Det(box(100 + 1.5 * SIZE, 300, size=2.5 * SIZE))])
    assert id_of(step, 0) == 2


# -- two faces -----------------------------------------------------------------------------


def test_two_faces_crossing_keep_their_ids() -> None:
    # One passes in front of the other (their boxes overlap by up to two thirds) at 5/s.
    tracker = make_tracker()
    fps, speed = 5, 1.0 * SIZE
    ids_a, ids_b = set(), set()
    for k in range(6 * fps):
        t = k / fps
        a = Det(box(100 + speed * t, 300))
        b = Det(box(700 - speed * t, 330))
        step = feed(tracker, t=t, dets=[a, b])
        ids_a.add(id_of(step, 0))
        ids_b.add(id_of(step, 1))
    assert ids_a == {1}
    assert ids_b == {2}


def test_two_fast_faces_passing_close_at_one_frame_a_second_are_not_swapped() -> None:
    # 1.5 widths a second in opposite directions, 1.1 heights apart: no box overlaps its
    # last one, and from the fourth frame on each face is nearer the other's last position
    # than its own. Only the fallback (second frame) and the velocity (third on) keep them
    # apart.
    tracker = make_tracker()
    speed = 1.5 * SIZE
    ids_a, ids_b = set(), set()
    for k in range(6):
        t = float(k)
        a = Det(box(100 + speed * t, 300))
        b = Det(box(100 + 4.5 * speed - speed * t, 300 + 1.1 * SIZE))
        step = feed(tracker, t=t, dets=[a, b])
        ids_a.add(id_of(step, 0))
        ids_b.add(id_of(step, 1))
    assert ids_a == {1}
    assert ids_b == {2}


# -- missing faces, ends -------------------------------------------------------------------


@pytest.mark.parametrize(("gap_s", "same_id"), [(1.5, True), (2.6, False)])
def test_a_face_missing_keeps_its_id_only_within_max_age(gap_s: float, same_id: bool) -> None:
    tracker = make_tracker(max_age_s=2.0)
    fps = 5
    steps = [feed(tracker, t=k / fps, dets=[Det(box(200, 300))]) for k in range(5)]
    last_seen = 4 / fps
    t = last_seen
    while t + 1 / fps < last_seen + gap_s:  # frames keep coming, without the face
        t += 1 / fps
        steps.append(feed(tracker, t=t, dets=[]))
    back = feed(tracker, t=last_seen + gap_s, dets=[Det(box(200, 300))])
    steps.append(back)
    steps.append(feed(tracker, t=last_seen + gap_s + 1 / fps, dets=[Det(box(200, 300))]))
    steps += [feed(tracker, t=last_seen + gap_s + k / fps, dets=[]) for k in range(2, 20)]
    if same_id:
        assert id_of(back, 0) == 1
        assert all_ended(steps[:-18]) == []
    else:
        assert id_of(back, 0) == 2
        assert back.faces[0].confirmed is False
    # The face is gone for good at the end: each confirmed track ended exactly once.
    assert sorted(all_ended(steps)) == ([1] if same_id else [1, 2])


def test_a_lost_face_keeps_moving_in_the_prediction_and_is_picked_up_further_on() -> None:
    # Hidden for a second (behind another face) while walking: it reappears where its
    # velocity put it, a face width and more from where it was last seen.
    tracker = make_tracker()
    fps, speed = 5, 1.5 * SIZE
    for k in range(6):
        feed(tracker, t=k / fps, dets=[Det(box(100 + speed * k / fps, 300))])
    hidden_until = 5 / fps + 1.0
    for k in range(6, int(hidden_until * fps)):
        feed(tracker, t=k / fps, dets=[])
    step = feed(tracker, t=hidden_until, dets=[Det(box(100 + speed * hidden_until, 300))])
    assert id_of(step, 0) == 1


def test_frames_the_scheduler_dropped_do_not_lose_a_moving_face() -> None:
    # 5 frames/s, then nothing for 1.6 s (frames dropped, not empty frames) while the face
    # walks on at two widths a second: it is where its velocity says, 3.2 widths on.
    tracker = make_tracker()
    fps, speed = 5, 2.0 * SIZE
    times = [k / fps for k in range(5)] + [0.8 + 1.6 + k / fps for k in range(5)]
    ids = {id_of(feed(tracker, t=t, dets=[Det(box(100 + speed * t, 300))]), 0) for t in times}
    assert ids == {1}


def test_a_receding_face_keeps_its_last_size_while_unseen() -> None:
    # It shrank for a second, then was hidden for four: extrapolating the shrinking would
    # leave a box too small to match it (or anything) when it shows again.
    tracker = make_tracker(max_age_s=5.0)
    for k in range(6):
        feed(tracker, t=k / 5, dets=[Det(box(300, 300, size=SIZE - 15 * k / 5))])
    last = SIZE - 15
    for k in range(6, 26):
        feed(tracker, t=k / 5, dets=[])
    step = feed(tracker, t=26 / 5, dets=[Det(box(300, 300, size=last))])
    assert id_of(step, 0) == 1


def test_a_one_frame_false_positive_never_shows_as_confirmed_or_ended() -> None:
    tracker = make_tracker()
    steps = [feed(tracker, t=0.0, dets=[Det(box(200, 300))])]
    steps.append(feed(tracker, t=0.2, dets=[Det(box(200, 300)), Det(box(600, 300))]))
    false_positive = id_of(steps[-1], 1)
    assert false_positive == 2
    seen_open: list[int] = []
    for k in range(2, 30):
        steps.append(feed(tracker, t=k / 5, dets=[Det(box(200, 300))] if k < 10 else []))
        seen_open += tracker.open_confirmed
    steps.append(TrackerStep(faces=(), confirmed=(), ended=tracker.close_all()))
    assert false_positive not in {i for s in steps for i in s.confirmed}
    assert false_positive not in all_ended(steps)
    assert false_positive not in seen_open
    assert all_ended(steps) == [1]


def test_a_tentative_track_missed_in_its_next_frame_is_gone() -> None:
    tracker = make_tracker()
    feed(tracker, t=0.0, dets=[Det(box(200, 300))])
    feed(tracker, t=0.5, dets=[])
    step = feed(tracker, t=1.0, dets=[Det(box(200, 300))])
    assert id_of(step, 0) == 2
    assert step.confirmed == ()


# -- low-confidence detections (stage 2) ---------------------------------------------------


def test_low_confidence_detections_keep_a_confirmed_track_alive() -> None:
    tracker = make_tracker(max_age_s=1.0)
    for k in range(3):
        feed(tracker, t=k / 5, dets=[Det(box(200, 300))])
    steps = [
        feed(tracker, t=k / 5, dets=[Det(box(200 + 2 * k, 300), confidence=0.4)])
        for k in range(3, 20)  # three seconds, three times max_age_s
    ]
    assert {id_of(step, 0) for step in steps} == {1}
    assert all_ended(steps) == []
    assert tracker.open_confirmed == (1,)


def test_a_low_confidence_detection_alone_never_starts_or_confirms_a_track() -> None:
    tracker = make_tracker()
    for k in range(10):
        step = feed(tracker, t=k / 5, dets=[Det(box(200, 300), confidence=0.5)])
        assert step.faces == ()
    assert tracker.live_ids == ()
    # Nor does it confirm a tentative track: one strong box, then weak ones.
    feed(tracker, t=2.0, dets=[Det(box(200, 300))])
    step = feed(tracker, t=2.2, dets=[Det(box(200, 300), confidence=0.5)])
    assert step.faces == ()
    assert step.confirmed == ()


def test_a_track_matched_in_stage_one_takes_no_low_confidence_box_too() -> None:
    # A duplicate weak box on the same face (what NMS leaves) stays unassigned.
    tracker = make_tracker()
    for k in range(3):
        feed(tracker, t=k / 5, dets=[Det(box(200, 300))])
    step = feed(tracker, t=0.6, dets=[Det(box(205, 300), 0.4), Det(box(200, 300))])
    assert [(f.track_id, f.detection_index) for f in step.faces] == [(1, 1)]


def test_below_low_confidence_and_low_overlap_in_stage_two_are_ignored() -> None:
    tracker = make_tracker()
    for k in range(3):
        feed(tracker, t=k / 5, dets=[Det(box(200, 300))])
    below = feed(tracker, t=0.6, dets=[Det(box(200, 300), confidence=0.2)])
    # Shifted 0.55 widths: IoU 0.29, enough for stage 1 (0.2), not for stage 2 (0.4).
    weak_far = feed(tracker, t=0.8, dets=[Det(box(255, 300), confidence=0.4)])
    strong_far = feed(tracker, t=1.0, dets=[Det(box(255, 300))])
    assert below.faces == ()
    assert weak_far.faces == ()
    assert id_of(strong_far, 0) == 1


# -- ids, empty frames, time ---------------------------------------------------------------


def test_ids_are_never_reused() -> None:
    tracker = make_tracker(max_age_s=0.5)
    ids: list[int] = []
    t = 0.0
    for round_ in range(5):
        for _ in range(3):
            step = feed(tracker, t=t, dets=[Det(box(200, 300)), Det(box(600 + round_, 300))])
            ids += [f.track_id for f in step.faces if f.track_id not in ids]
            t += 0.2
        t += 1.0  # long enough for both to end
        if round_ == 2:
            tracker.close_all()
    assert ids == list(range(1, 11))


def test_empty_frames_and_an_empty_tracker_are_fine() -> None:
    tracker = make_tracker()
    empty = tracker.update(
        boxes=np.empty((0, 4), np.float32), confidences=np.empty(0, np.float32), t=0.0
    )
    assert empty == TrackerStep(faces=(), confirmed=(), ended=())
    feed(tracker, t=0.1, dets=[Det(box(200, 300))])
    feed(tracker, t=0.2, dets=[Det(box(200, 300))])
    assert feed(tracker, t=0.3, dets=[]).faces == ()
    assert tracker.open_confirmed == (1,)
    assert tracker.expire(t=0.3) == ()
    assert tracker.close_all() == (1,)
    assert tracker.close_all() == ()
    assert tracker.expire(t=100.0) == ()


def test_mismatched_boxes_and_confidences_are_refused() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 confidences"):
        make_tracker().update(
            boxes=np.zeros((2, 4), np.float32), confidences=np.ones(1, np.float32), t=0.0
        )


def test_expire_ends_confirmed_tracks_when_frames_stop() -> None:
    tracker = make_tracker(max_age_s=2.0)
    feed(tracker, t=0.0, dets=[Det(box(200, 300))])
    feed(tracker, t=0.2, dets=[Det(box(200, 300)), Det(box(600, 300))])  # 2 is tentative
    assert tracker.expire(t=2.1) == ()
    assert tracker.open_confirmed == (1,)
    assert tracker.expire(t=2.3) == (1,)
    assert tracker.expire(t=9.0) == ()
    assert tracker.live_ids == ()
    step = feed(tracker, t=9.1, dets=[Det(box(200, 300))])
    assert id_of(step, 0) == 3


def test_close_all_returns_the_confirmed_tracks_seen_or_lost() -> None:
    tracker = make_tracker()
    for k in range(2):
        feed(tracker, t=k / 5, dets=[Det(box(200, 300)), Det(box(600, 300))])
    feed(tracker, t=0.4, dets=[Det(box(200, 300)), Det(box(900, 300))])  # 2 lost, 3 new
    before = tracker.open_confirmed
    assert tracker.close_all() == (1, 2)
    assert before == (1, 2)
    assert tracker.open_confirmed == ()
    assert tracker.live_ids == ()


def test_time_standing_still_or_stepping_back_does_not_break_tracking() -> None:
    tracker = make_tracker(max_age_s=1.0)
    first = feed(tracker, t=5.0, dets=[Det(box(200, 300))])
    same = feed(tracker, t=5.0, dets=[Det(box(200, 300))])
    back = feed(tracker, t=4.0, dets=[Det(box(201, 300))])  # a clock step backwards
    assert [id_of(s, 0) for s in (first, same, back)] == [1, 1, 1]
    assert same.confirmed == (1,)
    # The step back did not rewind the track's age: it was last seen at 5.0.
    assert tracker.expire(t=5.9) == ()
    assert tracker.expire(t=6.1) == (1,)


# -- settings ------------------------------------------------------------------------------


def test_settings_from_config_take_the_cameras_threshold_and_the_tracking_section() -> None:
    config = TrackingConfig(min_hits=3, max_age_s=4.5, low_confidence=0.25, match_iou=0.3)
    got = TrackerSettings.from_config(confidence_threshold=0.7, tracking=config, detect_fps=5)
    assert got == TrackerSettings(
        high_confidence=0.7, low_confidence=0.25, match_iou=0.3, min_hits=3, max_age_s=4.5
    )
    # At low detect rates a track lives at least MIN_AGE_PERIODS detect periods.
    slow = TrackerSettings.from_config(confidence_threshold=0.7, tracking=config, detect_fps=0.5)
    assert slow.max_age_s == MIN_AGE_PERIODS / 0.5


def test_min_hits_decides_when_a_track_is_confirmed() -> None:
    tracker = make_tracker(min_hits=3)
    steps = [feed(tracker, t=k / 5, dets=[Det(box(200, 300))]) for k in range(4)]
    assert [s.confirmed for s in steps] == [(), (), (1,), ()]
    assert [s.faces[0].confirmed for s in steps] == [False, False, True, True]
    single = make_tracker(min_hits=1)
    assert feed(single, t=0.0, dets=[Det(box(200, 300))]).confirmed == (1,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"low_confidence": 0.7}, "low_confidence <= high_confidence"),
        ({"match_iou": 0.0}, "match_iou"),
        ({"min_hits": 0}, "min_hits"),
        ({"max_age_s": 0.0}, "max_age_s"),
    ],
)
def test_inconsistent_settings_are_refused(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_tracker(**overrides)


# -- the parts -----------------------------------------------------------------------------


def moving_filters(*, dt_s: float, speed: float) -> BoxFilters:
    """Two boxes, one still and one moving right at `speed` px/s, seen every `dt_s` s."""
    filters = BoxFilters()
    filters.add(boxes=np.array([box(0, 500), box(0, 0)]))
    for k in range(1, 4):
        filters.predict(dt_s=dt_s)
        x = speed * dt_s * k
        filters.update(rows=np.array([0, 1]), boxes=np.array([box(0, 500), box(x, 0)]))
    return filters


def test_kalman_prediction_is_in_seconds_not_frames() -> None:
    # Two half-second predictions equal one of a second: skipped frames cost nothing.
    whole = moving_filters(dt_s=0.5, speed=100.0)
    halves = moving_filters(dt_s=0.5, speed=100.0)
    whole.predict(dt_s=1.0)
    halves.predict(dt_s=0.5)
    halves.predict(dt_s=0.5)
    assert whole.velocities[1, 0] == pytest.approx(100.0, rel=0.05)
    assert whole.velocities[0] == pytest.approx([0.0] * 4, abs=1e-9)
    assert whole.boxes == pytest.approx(halves.boxes)
    assert whole.boxes[1, 0] == pytest.approx(250.0 - SIZE / 2, abs=5.0)
    # The same face seen at 10 frames/s learns the same speed in pixels per second.
    fast = moving_filters(dt_s=0.1, speed=100.0)
    assert fast.velocities[1, 0] == pytest.approx(100.0, rel=0.05)
    before = fast.boxes
    fast.predict(dt_s=0.0)
    fast.predict(dt_s=-1.0)
    assert fast.boxes == pytest.approx(before)


def test_kalman_rows_come_and_go_with_their_state() -> None:
    filters = moving_filters(dt_s=0.5, speed=100.0)
    filters.add(boxes=np.array([box(900, 900)]))
    filters.keep(rows=np.array([False, True, True]))
    assert len(filters) == 2
    assert filters.velocities[0, 0] == pytest.approx(100.0, rel=0.05)
    assert filters.boxes[1] == pytest.approx(box(900, 900))


def test_kalman_never_turns_a_shrinking_box_inside_out() -> None:
    filters = BoxFilters()
    filters.add(boxes=np.array([box(0, 0)]))
    for k in range(1, 4):
        filters.predict(dt_s=0.1)
        filters.update(rows=np.array([0]), boxes=np.array([box(0, 0, size=SIZE - 20 * k)]))
    filters.predict(dt_s=30.0)
    x_min, y_min, x_max, y_max = filters.boxes[0]
    assert x_max >= x_min
    assert y_max >= y_min


def test_iou_matrix_values_and_empty_inputs() -> None:
    a = np.array([box(0, 0), box(1000, 0)], dtype=np.float32)
    b = np.array([box(50, 0), box(0, 0), (5.0, 5.0, 5.0, 5.0)], dtype=np.float32)
    got = iou_matrix(a, b)
    assert got.shape == (2, 3)
    assert got[0] == pytest.approx([1 / 3, 1.0, 0.0])
    assert got[1] == pytest.approx([0.0, 0.0, 0.0])
    degenerate = np.array([(5.0, 5.0, 5.0, 5.0)])
    assert iou_matrix(degenerate, degenerate).tolist() == [[0.0]]
    assert iou_matrix(np.empty((0, 4)), b).shape == (0, 3)
    assert iou_matrix(a, np.empty((0, 4))).shape == (2, 0)


def test_match_rejects_weak_pairs_without_letting_them_block_good_ones() -> None:
    # Row 1 overlaps column 0 only weakly (0.15, below the gate). Counting it would make
    # 0-1 + 1-0 (0.6) beat 0-0 (0.5), then drop 1-0 and leave row 0 on its worse column.
    iou = np.array([[0.5, 0.45], [0.15, 0.0]])
    got = match(iou, min_iou=0.2)
    assert got.pairs == ((0, 0),)
    assert got.unmatched_rows == (1,)
    assert got.unmatched_cols == (1,)
    assert match(iou, min_iou=0.05).pairs == ((0, 1), (1, 0))
    empty = match(np.empty((0, 3)), min_iou=0.2)
    assert empty == ((), (), (0, 1, 2))


# -- property ------------------------------------------------------------------------------

# Boxes near three faces' places (so tracks, duplicates and both stages really meet) and
# anywhere; confidences across both thresholds; time steps backwards included.
_near_a_face = st.builds(
    lambda anchor, dx, dy, size: (100 + 150 * anchor + dx, 200 + dy, size),
    st.integers(min_value=0, max_value=2),
    st.floats(min_value=-40.0, max_value=40.0),
    st.floats(min_value=-40.0, max_value=40.0),
    st.floats(min_value=70.0, max_value=130.0),
)
_anywhere = st.tuples(
    st.floats(min_value=0.0, max_value=600.0),
    st.floats(min_value=0.0, max_value=600.0),
    st.floats(min_value=0.0, max_value=200.0),
)
_detection = st.tuples(st.one_of(_near_a_face, _anywhere), st.floats(min_value=0.0, max_value=1.0))
_frame = st.tuples(
    st.floats(min_value=-0.5, max_value=1.5),
    st.lists(_detection, max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(_frame, min_size=1, max_size=25))
def test_faces_map_tracks_and_detections_one_to_one(
    frames: list[tuple[float, list[tuple[tuple[float, float, float], float]]]],
) -> None:
    tracker = make_tracker(max_age_s=1.0)
    t = 0.0
    seen_ids: set[int] = set()
    confirmed_ever: set[int] = set()
    ended: list[int] = []
    for dt, detections in frames:
        t += dt
        dets = [Det((x, y, x + s, y + s), confidence=c) for (x, y, s), c in detections]
        step = feed(tracker, t=t, dets=dets)
        track_ids = [f.track_id for f in step.faces]
        indices = [f.detection_index for f in step.faces]
        assert len(set(track_ids)) == len(track_ids)
        assert len(set(indices)) == len(indices)
        for face in step.faces:
            assert dets[face.detection_index].confidence >= LOW
            if face.track_id not in seen_ids:  # a new track: a strong detection, a new id
                assert dets[face.detection_index].confidence >= HIGH
                assert face.track_id > max(seen_ids, default=0)
        seen_ids |= set(track_ids)
        confirmed_ever |= set(step.confirmed)
        ended += step.ended
    ended += tracker.close_all()
    assert sorted(ended) == sorted(confirmed_ever)
