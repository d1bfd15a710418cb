"""Tracking quality on generated ground truth (edge_facedet.tools.tracksynth / trackscore).

The tracker keeps identities (IDF1) on short versions of two scenarios, run through the real
detector at 5 frames/s; and the scoring itself is checked on hand-made hypotheses, so a
broken metric cannot make the tracker's test pass.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.tools.trackscore import (
    BlockingDetector,
    Hypothesis,
    accumulate,
    run_sequences,
    score,
    scores_by_rate,
)
from edge_facedet.tools.tracksynth import (
    FaceSprite,
    GroundTruthFace,
    Scenario,
    SyntheticSequence,
    crossing,
    harvest_sprites,
    leave_and_return,
    load_background,
)
from edge_facedet.tracking.tracker import TrackerSettings
from tests.support.paths import MEDIA

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from numpy.typing import NDArray

    from edge_facedet.tools.trackscore import TrackScore

RATE = 5.0
SETTINGS = TrackerSettings.from_config(
    confidence_threshold=0.5, tracking=TrackingConfig(), detect_fps=5.0
)


@pytest.fixture(scope="module")
def detector(model_xml: Path) -> Iterator[BlockingDetector]:
    with BlockingDetector(
        model_xml=model_xml, confidence_threshold=SETTINGS.low_confidence, device="CPU"
    ) as found:
        yield found


@pytest.fixture(scope="module")
def sprites(detector: BlockingDetector) -> list[FaceSprite]:
    return harvest_sprites(find_faces=detector, media=MEDIA)


@pytest.fixture(scope="module")
def background() -> NDArray[np.uint8]:
    return load_background(media=MEDIA)


def _tracked(
    scenario: Scenario,
    *,
    detector: BlockingDetector,
    sprites: list[FaceSprite],
    background: NDArray[np.uint8],
) -> TrackScore:
    sequence = SyntheticSequence(scenario=scenario, sprites=sprites, background=background)
    runs = run_sequences([sequence], find_faces=detector, settings=SETTINGS, rates=(RATE,))
    return scores_by_rate(runs, rates=(RATE,))[RATE][scenario.name]


def test_tracker_keeps_both_identities_through_a_crossing(
    detector: BlockingDetector, sprites: list[FaceSprite], background: NDArray[np.uint8]
) -> None:
    height, width = background.shape[:2]
    scenario = crossing(width=width, height=height, duration_s=4.0)
    result = _tracked(scenario, detector=detector, sprites=sprites, background=background)
    assert result.gt_boxes >= 30  # both faces were in the ground truth most of the time
    assert result.idf1 >= 0.9, result


def test_tracker_keeps_the_identity_of_a_face_that_leaves_and_returns(
    detector: BlockingDetector, sprites: list[FaceSprite], background: NDArray[np.uint8]
) -> None:
    height, width = background.shape[:2]
    scenario = leave_and_return(width=width, height=height, start=0.72, away_s=1.0)
    result = _tracked(scenario, detector=detector, sprites=sprites, background=background)
    assert result.gt_boxes >= 12
    assert result.idf1 >= 0.9, result


# --- the scoring itself, on hand-made hypotheses (no detector, no tracker) -------------------


def _plain_sprite() -> FaceSprite:
    """Geometry only: an opaque block whose face box fills the middle."""
    return FaceSprite(
        pixels=np.zeros((100, 80, 3), np.uint8),
        alpha=np.ones((100, 80), np.float32),
        face_box=(20.0, 20.0, 60.0, 80.0),
        source="test",
    )


def _crossing_truth() -> list[tuple[GroundTruthFace, ...]]:
    sequence = SyntheticSequence(
        scenario=crossing(width=768, height=432, duration_s=4.0),
        sprites=[_plain_sprite()],
        background=np.zeros((432, 768, 3), np.uint8),
        fps=RATE,
    )
    return [sequence.ground_truth(i) for i in range(sequence.frame_count)]


def _as_hypotheses(
    faces: tuple[GroundTruthFace, ...], *, ids: dict[int, int]
) -> tuple[Hypothesis, ...]:
    return tuple(Hypothesis(track_id=ids[face.gt_id], box=face.box) for face in faces)


def test_the_ground_truth_as_hypotheses_scores_perfectly() -> None:
    truth = _crossing_truth()
    hypotheses = [_as_hypotheses(faces, ids={1: 7, 2: 9}) for faces in truth]
    result = score({"perfect": accumulate(truth, hypotheses)})["perfect"]
    assert result.gt_boxes > 30
    assert (result.mota, result.idf1, result.id_switches) == (1.0, 1.0, 0)
    assert (result.precision, result.recall) == (1.0, 1.0)


def test_ids_swapped_half_way_show_as_switches() -> None:
    truth = _crossing_truth()
    half = len(truth) // 2
    hypotheses = [
        _as_hypotheses(faces, ids={1: 7, 2: 9} if i < half else {1: 9, 2: 7})
        for i, faces in enumerate(truth)
    ]
    result = score({"swapped": accumulate(truth, hypotheses)})["swapped"]
    assert result.id_switches == 2
    assert result.idf1 < 0.7
    # Every box is still found: only the identity is wrong, so MOTA loses just the switches.
    assert math.isclose(result.mota, 1.0 - 2 / result.gt_boxes)


def test_a_mostly_hidden_face_is_neither_required_nor_a_false_positive() -> None:
    hidden = GroundTruthFace(gt_id=1, box=(0.0, 0.0, 40.0, 60.0), visible=0.3)
    seen = GroundTruthFace(gt_id=2, box=(100.0, 0.0, 140.0, 60.0), visible=1.0)
    stray = Hypothesis(track_id=5, box=(300.0, 300.0, 340.0, 360.0))
    truth = [(hidden, seen), (hidden, seen)]
    on_both = [
        (Hypothesis(track_id=3, box=hidden.box), Hypothesis(track_id=4, box=seen.box)),
        (Hypothesis(track_id=4, box=seen.box),),
    ]
    result = score({"x": accumulate(truth, on_both)})["x"]
    assert (result.gt_boxes, result.false_positives, result.misses) == (2, 0, 0)
    with_stray = [(*frame, stray) for frame in on_both]
    assert score({"x": accumulate(truth, with_stray)})["x"].false_positives == 2
