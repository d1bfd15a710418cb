"""Tests of `edge_facedet.tools.evaluation`: the AP protocol on hand-computed cases, the WIDER FACE
ground-truth parser, the evaluation loop (with a fake detector on synthetic images), the real
model against the independent reference path of `benchmarks/wider_reference.py`, and the
`edge-facedet eval` command."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import math
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_facedet.inference.detector import BatchResult, OpenVinoDetector
from edge_facedet.tools.average_precision import (
    AveragePrecision,
    compute_average_precision,
    pairwise_ioa,
    pairwise_iou,
)
from edge_facedet.tools.evaluation import (
    EvaluationError,
    GroundTruthError,
    ProgressLine,
    evaluate,
    read_ground_truth,
    scale_to_image,
)
from tests.support.paths import REPO, WIDER_DEV
from tests.support.service import run_cli

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    from numpy.typing import NDArray

WIDER_GT = WIDER_DEV / "wider_face_val_bbx_gt.txt"
WIDER_IMAGES = WIDER_DEV / "images"

Box = tuple[float, float, float, float]


def ap_of(
    *, faces: Sequence[Sequence[Box]], detections: Sequence[Sequence[tuple[Box, float]]]
) -> AveragePrecision:
    """AP of per-image faces and (box, score) detections, boxes as x_min, y_min, x_max, y_max."""
    return compute_average_precision(
        gt_boxes=[np.array(image, np.float64).reshape(-1, 4) for image in faces],
        pred_boxes=[
            np.array([box for box, _ in image], np.float64).reshape(-1, 4) for image in detections
        ],
        pred_scores=[np.array([score for _, score in image], np.float64) for image in detections],
    )


# Faces 100 px high count; FACE_A and FACE_B are disjoint.
FACE_A: Box = (0, 0, 100, 100)
FACE_B: Box = (200, 0, 300, 100)
FAR_AWAY: Box = (500, 500, 600, 600)


# --- AP by hand ---------------------------------------------------------------------------


def test_perfect_detections_give_ap_one() -> None:
    faces = [[FACE_A, FACE_B], [FACE_A], [(10, 20, 110, 150)]]
    detections = [[(FACE_A, 0.9), (FACE_B, 0.3)], [(FACE_A, 0.6)], [((10, 20, 110, 150), 0.1)]]
    result = ap_of(faces=faces, detections=detections)
    assert result.ap == 1.0
    assert (result.true_positives, result.false_positives) == (4, 0)
    assert result.gt_faces_counted == 4


def test_false_positive_ranked_above_the_true_positive_halves_ap() -> None:
    # Ranked: FP (P 0/1), TP (recall 1, precision 1/2) -> AP = 1 * 1/2.
    result = ap_of(faces=[[FACE_A]], detections=[[(FAR_AWAY, 0.9), (FACE_A, 0.8)]])
    assert result.ap == pytest.approx(0.5)
    assert (result.true_positives, result.false_positives) == (1, 1)


def test_second_detection_of_a_face_is_a_false_positive() -> None:
    # Ranked: TP on A (r 1/2, p 1), duplicate on A = FP (r 1/2, p 1/2), TP on B (r 1, p 2/3).
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6; counting the duplicate as a TP would give 1.
    duplicate: Box = (2, 2, 102, 102)
    result = ap_of(
        faces=[[FACE_A, FACE_B]],
        detections=[[(FACE_A, 0.9), (duplicate, 0.8), (FACE_B, 0.7)]],
    )
    assert result.ap == pytest.approx(5 / 6)
    assert (result.true_positives, result.false_positives) == (2, 1)


def test_taken_best_face_makes_a_false_positive_even_when_another_face_overlaps() -> None:
    # The second detection overlaps A (IoU 92/108) more than B (IoU 88/112 >= 0.5). VOC looks
    # only at the best face, A, already taken: FP, and B stays missed. AP = 1/2 * 1.
    face_b_overlapping: Box = (20, 0, 120, 100)
    result = ap_of(
        faces=[[FACE_A, face_b_overlapping]],
        detections=[[(FACE_A, 0.9), ((8, 0, 108, 100), 0.8)]],
    )
    assert result.ap == pytest.approx(0.5)
    assert (result.true_positives, result.false_positives) == (1, 1)


# --- the model card's rules, case by case -------------------------------------------------
# Each case below was checked against the project's earlier rule (IoU against every face, a
# detection whose best-IoU face is difficult dropped): the "old rule" figure in a comment is
# what that rule gives, so the test fails if the matcher slides back to it.


@pytest.mark.parametrize(
    ("ignored_face", "why"),
    [
        ((300, 300, 340, 330), "30 px high < 64"),
        # Clipped to [0, 1024] first: (0, 1000, 800, 1024), 24 px high. The detection is that
        # clipped box: IoA 1. (Old rule: the face, 300 px high, counts; the detection, IoU
        # 0.08, is an FP ranked first, and recall stops at 1/2 with precision 1/2: AP 1/4.)
        ((0, 1000, 800, 1300), "24 px high once clipped"),
    ],
)
def test_detection_on_an_ignored_face_is_neither_true_nor_false(
    ignored_face: Box, why: str
) -> None:
    # Were the detection on the ignored face an FP ranked first, AP would be 1/2.
    detection = np.clip(np.array(ignored_face, np.float64), 0, 1024)
    result = ap_of(
        faces=[[FACE_A, ignored_face]],
        detections=[[(tuple(detection), 0.95), (FACE_A, 0.9)]],
    )
    assert result.ap == 1.0, why
    assert (result.gt_faces_counted, result.gt_faces_ignored) == (1, 1)
    assert (result.true_positives, result.false_positives, result.detections_ignored) == (1, 0, 1)


def test_faces_are_clipped_to_1024_before_the_inclusive_height_range() -> None:
    faces = [
        [
            (0, 0, 50, 64),  # 64 px high: counted (the bound is inclusive)
            (0, 100, 50, 163),  # 63 px: difficult
            (100, 0, 900, 1024),  # 1024 px: counted
            (0, 0, 900, 1025),  # clipped to 1024 px: counted (old rule: 1025 > 1024, ignored)
            (0, 990, 50, 1100),  # clipped to 990..1024, 34 px: difficult (old rule: counted)
            (30, 0, 30, 100),  # empty (no width): difficult (old rule: 100 px high, counted)
        ]
    ]
    result = ap_of(faces=faces, detections=[[]])
    assert (result.gt_faces_counted, result.gt_faces_ignored) == (3, 3)


def test_a_counted_face_at_iou_half_is_preferred_over_a_better_difficult_one() -> None:
    # D (80x63, difficult) and A overlap. The first detection (0, 0, 80, 70) has IoU 0.9 with
    # D (5040 / 5600) but 0.56 with A (5600 / 10000) >= 0.5: A is taken first, a TP. The exact
    # detection of A, second, is then a duplicate: FP. B's detection is a TP.
    #   ranked TP (r 1/2, p 1), FP (r 1/2, p 1/2), TP (r 1, p 2/3): AP = 1/2 + 1/2 * 2/3 = 5/6.
    # (Old rule: the first detection's best face is D, so it is dropped; A and B are TPs, AP 1.)
    difficult: Box = (0, 0, 80, 63)
    result = ap_of(
        faces=[[FACE_A, FACE_B, difficult]],
        detections=[[((0, 0, 80, 70), 0.9), (FACE_A, 0.8), (FACE_B, 0.7)]],
    )
    assert result.ap == pytest.approx(5 / 6)
    assert (result.true_positives, result.false_positives, result.detections_ignored) == (2, 1, 0)


def test_a_difficult_face_hit_by_two_detections_makes_neither_count() -> None:
    # D is 200x60 (difficult). Both 40x40 detections lie inside it: IoA 1600 / 1600 = 1 (IoU
    # 1600 / 12000 = 0.13), so both are neither TP nor FP; a difficult face is never "taken".
    # The exact detection of A is the only TP: AP 1.
    # (A second hit counted as a duplicate FP would give 1/2; the old rule, IoU 0.13 < 0.5,
    # makes both FPs ranked first: FP, FP, TP -> AP 1/3.)
    difficult: Box = (300, 0, 500, 60)
    result = ap_of(
        faces=[[FACE_A, difficult]],
        detections=[[((310, 10, 350, 50), 0.95), ((400, 10, 440, 50), 0.9), (FACE_A, 0.8)]],
    )
    assert result.ap == 1.0
    assert (result.true_positives, result.false_positives, result.detections_ignored) == (1, 0, 2)


@pytest.mark.parametrize(
    ("detection", "ioa", "expected_ap"),
    [
        # 40x40 inside D: IoA 1, IoU 1600 / 36000 = 0.04 (old rule: FP, AP 1/2).
        ((100, 10, 140, 50), 1.0, 1.0),
        # Half inside: IoA 20 * 40 / 1600 = 0.5, IoU 800 / 36800 = 0.02 (old rule: AP 1/2).
        ((580, 10, 620, 50), 0.5, 1.0),
        # One pixel further: IoA 19 * 40 / 1600 = 0.475 < 0.5: an FP ranked first, AP 1/2.
        ((581, 10, 621, 50), 0.475, 0.5),
    ],
)
def test_overlap_with_a_difficult_face_is_over_the_detection_area(
    detection: Box, ioa: float, expected_ap: float
) -> None:
    difficult: Box = (0, 0, 600, 60)  # 600 px wide, 60 px high: difficult
    face: Box = (0, 200, 100, 300)
    assert pairwise_ioa(np.array([detection]), np.array([difficult]))[0, 0] == pytest.approx(ioa)
    result = ap_of(faces=[[face, difficult]], detections=[[(detection, 0.9), (face, 0.8)]])
    assert result.ap == pytest.approx(expected_ap)


@pytest.mark.parametrize(
    ("detection", "expected_ap"),
    [
        # IoU 4960 / 10000 = 0.496 as floats; rounded to (0, 0, 100, 50): 0.5, a TP.
        ((0, 0, 100, 49.6), 1.0),
        # Rounded half to even (np.rint): (0, 0, 100, 50), a TP. As floats IoU 4975 / 10025 =
        # 0.496; rounded half up, (1, 0, 101, 50): 4950 / 10050 = 0.49. Both would be FPs.
        ((0.5, 0, 100.5, 50), 1.0),
        # Rounded to (0, 0, 100, 49): IoU 0.49, an FP.
        ((0, 0, 100, 49.4), 0.0),
    ],
)
def test_detection_boxes_are_rounded_to_integers_before_matching(
    detection: Box, expected_ap: float
) -> None:
    # (Old rule, on the float boxes: the first two are FPs, AP 0.)
    assert ap_of(faces=[[FACE_A]], detections=[[(detection, 0.9)]]).ap == expected_ap


def test_detections_in_an_image_without_faces_are_false_positives() -> None:
    # Ranked: FP from the empty image (p 0), then the TP (r 1, p 1/2) -> AP 1/2.
    result = ap_of(faces=[[FACE_A], []], detections=[[(FACE_A, 0.8)], [(FACE_A, 0.9)]])
    assert result.ap == pytest.approx(0.5)
    assert result.false_positives == 1


@pytest.mark.parametrize(
    ("detection", "expected_ap"),
    [
        ((0, 0, 100, 50), 1.0),  # intersection 5000 / union 10000 = 0.5 exactly: a TP
        ((0, 0, 100, 49), 0.0),  # 0.49: an FP
    ],
)
def test_iou_of_exactly_half_is_a_true_positive(detection: Box, expected_ap: float) -> None:
    assert pairwise_iou(np.array([detection]), np.array([FACE_A]))[0, 0] <= 0.5
    result = ap_of(faces=[[FACE_A]], detections=[[(detection, 0.9)]])
    assert result.ap == expected_ap


def test_all_point_interpolation_matches_a_hand_computed_curve() -> None:
    # Four faces over two images; ranked detections TP, FP, FP, TP, TP (one face missed):
    #   rank      1     2     3     4     5
    #   recall    1/4   1/4   1/4   2/4   3/4
    #   precision 1     1/2   1/3   1/2   3/5
    # Interpolated precision (the best at this recall or beyond): 1, 3/5, 3/5, 3/5, 3/5.
    # AP = 1/4 * 1 + (2/4 - 1/4) * 3/5 + (3/4 - 2/4) * 3/5 = 1/4 + 3/20 + 3/20 = 11/20.
    # Without the interpolation it would be 1/4 + 1/4 * 1/2 + 1/4 * 3/5 = 21/40, and the
    # 11-point VOC 2007 method (3 * 1 + 5 * 3/5 + 3 * 0) / 11 = 6/11.
    faces = [[FACE_A, FACE_B], [FACE_A, FACE_B]]
    detections = [
        [(FACE_A, 0.9), (FAR_AWAY, 0.8), (FACE_B, 0.5)],
        [(FAR_AWAY, 0.7), (FACE_A, 0.6)],
    ]
    result = ap_of(faces=faces, detections=detections)
    assert result.ap == pytest.approx(11 / 20)
    assert (result.true_positives, result.false_positives) == (3, 2)


def test_no_counted_face_gives_nan() -> None:
    assert math.isnan(ap_of(faces=[[(0, 0, 10, 10)]], detections=[[(FACE_A, 0.5)]]).ap)


def test_misaligned_sequences_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compute_average_precision(
            gt_boxes=[np.zeros((0, 4))], pred_boxes=[], pred_scores=[np.zeros(0)]
        )


box_strategy = st.tuples(
    st.integers(0, 500), st.integers(0, 500), st.integers(1, 300), st.integers(1, 300)
).map(lambda xywh: (xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]))


@settings(max_examples=60, deadline=None)
@given(st.lists(box_strategy, max_size=6), st.lists(box_strategy, max_size=6))
def test_pairwise_iou_matches_a_scalar_definition(first: list[Box], second: list[Box]) -> None:
    def scalar_iou(a: Box, b: Box) -> float:
        width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = width * height
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    expected = np.array([[scalar_iou(a, b) for b in second] for a in first]).reshape(
        len(first), len(second)
    )
    np.testing.assert_allclose(pairwise_iou(np.array(first), np.array(second)), expected)


# --- ground-truth parser ------------------------------------------------------------------

GT_TEXT = """\
0--Parade/a.jpg
2
10 20 30 80 0 0 0 0 0 0
5 5 3 4 2 0 0 1 2 0
0--Parade/empty.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/c.jpg
1
100 50 64 70 0 0 0 0 0 0
"""


def test_parser_reads_faces_and_count_zero_images(tmp_path: Path) -> None:
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text(GT_TEXT)
    annotations = read_ground_truth(gt_file=gt_file)
    assert [a.image for a in annotations] == [
        "0--Parade/a.jpg",
        "0--Parade/empty.jpg",
        "1--Handshaking/c.jpg",
    ]
    np.testing.assert_array_equal(annotations[0].boxes, [[10, 20, 40, 100], [5, 5, 8, 9]])
    assert annotations[1].boxes.shape == (0, 4)
    np.testing.assert_array_equal(annotations[2].boxes, [[100, 50, 164, 120]])


def test_parser_keeps_only_images_present_in_the_folder(tmp_path: Path) -> None:
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text(GT_TEXT)
    images = tmp_path / "images"
    (images / "1--Handshaking").mkdir(parents=True)
    (images / "1--Handshaking" / "c.jpg").write_bytes(b"")
    annotations = read_ground_truth(gt_file=gt_file, images_dir=images)
    assert [a.image for a in annotations] == ["1--Handshaking/c.jpg"]


@pytest.mark.parametrize(
    ("bad_text", "line", "message"),
    [
        (GT_TEXT.replace("5 5 3 4 2 0 0 1 2 0", "5 5 3 4 2 0 0 1 2"), 4, "expected 10 integers"),
        (GT_TEXT.replace("100 50 64 70", "100 50 6x4 70"), 10, "must be integers"),
        (GT_TEXT.replace("\n1\n", "\none\n"), 9, "face count"),
        (GT_TEXT.replace("0--Parade/empty.jpg", "0--Parade/empty"), 5, "expected an image name"),
        # Without its zero line, the count-0 entry swallows the next name as a face line.
        (GT_TEXT.replace("0\n0 0 0 0 0 0 0 0 0 0\n", "0\n"), 7, "expected 10 integers"),
        (GT_TEXT + "2--Demonstration/d.jpg\n3\n1 1 1 1 0 0 0 0 0 0\n", 13, "file ends inside"),
        # Numbers that int() takes but float64 (or any image) cannot: bounded, one line.
        (GT_TEXT.replace("100 50 64 70", "9" * 400 + " 50 64 70"), 10, "at most 7 digits"),
        (GT_TEXT.replace("\n1\n", "\n" + "9" * 400 + "\n"), 9, "face count"),
        (GT_TEXT.replace("\n1\n", "\n-1\n"), 9, "face count"),
        (GT_TEXT.replace("\n1\n", "\n\u0661\n"), 9, "face count"),  # an Arabic-Indic 1
        (GT_TEXT.replace("100 50 64 70", "+100 50 64 70"), 10, "at most 7 digits"),
    ],
)
def test_malformed_ground_truth_names_file_and_line(
    tmp_path: Path, bad_text: str, line: int, message: str
) -> None:
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text(bad_text)
    with pytest.raises(GroundTruthError, match=re.escape(f"{gt_file}:{line}: ")) as caught:
        read_ground_truth(gt_file=gt_file)
    assert message in str(caught.value)
    assert len(str(caught.value)) < len(str(gt_file)) + 200  # the bad text is cut short


# --- the evaluation loop, with a fake detector --------------------------------------------


class BrightBoxDetector:
    """Finds the one bright rectangle of a synthetic image; records how many calls overlap."""

    def __init__(self, *, batch_size: int, max_inflight: int) -> None:
        self._batch_size = batch_size
        self._max_inflight = max_inflight
        self.running = 0
        self.max_running = 0
        self.batch_lengths: list[int] = []

    @property
    def input_size(self) -> tuple[int, int]:
        return (448, 448)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def max_inflight(self) -> int:
        return self._max_inflight

    async def detect(self, images: Sequence[NDArray[np.uint8]]) -> BatchResult:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.batch_lengths.append(len(images))
        try:
            await asyncio.sleep(0.05)  # long enough for the other workers to pile up
            rows = []
            for image in images:
                assert image.shape == (448, 448, 3)
                assert image.dtype == np.uint8
                ys, xs = np.nonzero(image[:, :, 1] > 127)
                edges = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
                rows.append(np.concatenate([[0.9], edges / 448]).astype(np.float32)[None])
            return BatchResult(rows=rows, inference_seconds=0.02)
        finally:
            self.running -= 1


def write_synthetic_dataset(folder: Path) -> tuple[Path, Path, list[Box]]:
    """Images of several sizes, each one white face-box on black, and their ground truth."""
    sizes_and_faces = [
        ((640, 480), (100, 120, 200, 260)),
        ((1024, 768), (500, 100, 700, 400)),
        ((300, 900), (50, 600, 250, 800)),
        ((1024, 1366), (10, 10, 400, 500)),
        ((448, 448), (300, 300, 400, 420)),
    ]
    images = folder / "images" / "0--Synthetic"
    images.mkdir(parents=True)
    lines = []
    for index, ((width, height), (x0, y0, x1, y1)) in enumerate(sizes_and_faces):
        image = np.zeros((height, width, 3), np.uint8)
        image[y0:y1, x0:x1] = 255
        cv2.imwrite(str(images / f"{index}.png"), image)
        lines += [f"0--Synthetic/{index}.png", "1", f"{x0} {y0} {x1 - x0} {y1 - y0} 0 0 0 0 0 0"]
    gt_file = folder / "gt.txt"
    gt_file.write_text("\n".join(lines) + "\n")
    return folder / "images", gt_file, [face for _, face in sizes_and_faces]


def test_detections_are_scaled_to_the_image_without_clipping() -> None:
    # The checker's resize_prediction_boxes: normalised coordinates times the image size,
    # a box reaching past the border kept as it is (the service's to_detections clips it).
    rows = np.array([[0.9, -0.1, 0.5, 0.5, 1.25]], np.float32)
    boxes = scale_to_image(rows, width=1000, height=400)
    np.testing.assert_allclose(boxes, [[-100, 200, 500, 500]])
    assert boxes.dtype == np.float32


@pytest.mark.parametrize(("batch_size", "batch_lengths"), [(2, [1, 2, 2]), (1, [1, 1, 1, 1, 1])])
async def test_evaluate_maps_boxes_back_and_keeps_max_inflight_batches_busy(
    tmp_path: Path, batch_size: int, batch_lengths: list[int]
) -> None:
    images_dir, gt_file, _ = write_synthetic_dataset(tmp_path)
    detector = BrightBoxDetector(batch_size=batch_size, max_inflight=2)
    progress: list[tuple[int, int]] = []
    result = await evaluate(
        detector=detector,
        images_dir=images_dir,
        gt_file=gt_file,
        progress=lambda done, total: progress.append((done, total)),
    )
    # Boxes found at 448x448 only match the faces (IoU >= 0.5) once scaled back per image.
    assert result.ap == 1.0
    assert (result.images, result.gt_faces_counted, result.detections) == (5, 5, 5)
    assert sorted(detector.batch_lengths) == batch_lengths
    assert detector.max_running == 2  # pipelined, and never beyond max_inflight
    assert progress[0] == (0, 5)
    assert progress[-1] == (5, 5)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert result.images_per_second > 0


async def test_evaluate_names_an_unreadable_image(tmp_path: Path) -> None:
    images_dir, gt_file, _ = write_synthetic_dataset(tmp_path)
    broken = images_dir / "0--Synthetic" / "3.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(EvaluationError, match=re.escape(str(broken))):
        await evaluate(
            detector=BrightBoxDetector(batch_size=1, max_inflight=2),
            images_dir=images_dir,
            gt_file=gt_file,
        )


async def test_evaluate_refuses_an_image_declaring_a_huge_size_unread(tmp_path: Path) -> None:
    images_dir, gt_file, _ = write_synthetic_dataset(tmp_path)
    bomb = images_dir / "0--Synthetic" / "2.png"
    # A PNG signature and header declaring 30000x30000 pixels: never handed to a decoder.
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + bytes(4))
    with pytest.raises(
        EvaluationError, match=re.escape(f"{bomb}: PNG header declares 30000x30000")
    ):
        await evaluate(
            detector=BrightBoxDetector(batch_size=1, max_inflight=2),
            images_dir=images_dir,
            gt_file=gt_file,
        )


async def test_evaluate_refuses_a_folder_without_annotated_images(tmp_path: Path) -> None:
    _, gt_file, _ = write_synthetic_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvaluationError, match="no image annotated"):
        await evaluate(
            detector=BrightBoxDetector(batch_size=1, max_inflight=1),
            images_dir=empty,
            gt_file=gt_file,
        )


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    stream = TerminalStream()
    report = ProgressLine(stream=stream)
    for done in range(0, 490, 7):
        report(done, 489)
    report(489, 489)
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert re.search(r"\r  489/489 images  \d+\.\d img/s\n\Z", text)
    assert text.startswith("\r  0/489 images")


def test_progress_writes_about_ten_lines_to_a_log() -> None:
    stream = io.StringIO()
    report = ProgressLine(stream=stream)
    for done in range(0, 489, 3):
        report(done, 489)
    report(489, 489)
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 12
    assert lines[-1].startswith("  489/489 images  ")
    assert "\r" not in stream.getvalue()


# --- the real model against the reference path --------------------------------------------


def require_wider_dev() -> None:
    if WIDER_GT.is_file() and WIDER_IMAGES.is_dir():
        return
    if os.environ.get("EDGE_FACEDET_SKIP_WIDER") == "1":
        pytest.skip(f"EDGE_FACEDET_SKIP_WIDER=1 and {WIDER_DEV} is missing")
    pytest.fail(
        f"the WIDER FACE dev subset is missing: expected {WIDER_GT} and {WIDER_IMAGES} "
        "(set EDGE_FACEDET_SHARED to the shared folder, or EDGE_FACEDET_SKIP_WIDER=1 to skip)"
    )


def make_subset(folder: Path, *, count: int) -> tuple[Path, Path]:
    """Symlinks to the first `count` dev images and their ground-truth entries, verbatim."""
    lines = WIDER_GT.read_text().splitlines()
    images_dir = folder / "images"
    kept: list[str] = []
    index = 0
    while index < len(lines) and len(kept) < count:
        name, faces = lines[index].strip(), int(lines[index + 1])
        entry = lines[index : index + 2 + max(faces, 1)]
        index += len(entry)
        if (WIDER_IMAGES / name).is_file():
            (images_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (images_dir / name).symlink_to(WIDER_IMAGES / name)
            kept.append(name)
            with (folder / "gt.txt").open("a") as gt_file:
                gt_file.write("\n".join(entry) + "\n")
    assert len(kept) == count
    return images_dir, folder / "gt.txt"


def load_reference() -> ModuleType:
    path = REPO / "benchmarks" / "wider_reference.py"
    spec = importlib.util.spec_from_file_location("wider_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_service_path_ap_matches_the_reference_path(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_wider_dev()  # before the model fixture, so a missing dataset is what gets reported
    model_xml: Path = request.getfixturevalue("model_xml")
    images_dir, gt_file = make_subset(tmp_path, count=40)
    # Batch 3 over 40 images ends with a padded batch of one, the service's partial-batch path.
    detector = await asyncio.to_thread(
        OpenVinoDetector, model_xml=model_xml, device="CPU", batch_size=3
    )
    service = await evaluate(detector=detector, images_dir=images_dir, gt_file=gt_file)
    reference_module = load_reference()
    annotations = read_ground_truth(gt_file=gt_file, images_dir=images_dir)
    reference = await asyncio.to_thread(
        reference_module.reference_average_precision,
        model_xml=model_xml,
        images_dir=images_dir,
        annotations=annotations,
    )
    assert service.images == len(annotations) == 40
    assert service.gt_faces_counted == reference.gt_faces_counted > 0
    # A broken path (wrong channel order, letterbox, unscaled boxes) lands far below this.
    assert reference.ap > 0.7
    assert abs(service.ap - reference.ap) * 100 <= 0.5, (service.ap, reference.ap)


# --- the command --------------------------------------------------------------------------


def test_eval_command_prints_the_ap(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    require_wider_dev()
    model_root: Path = request.getfixturevalue("model_root")
    images_dir, gt_file = make_subset(tmp_path, count=10)
    completed = run_cli(
        "eval",
        "--images", images_dir,
        "--gt", gt_file,
        "--models-dir", model_root,
        "--precision", "FP16-INT8",
        "--device", "CPU",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"^WIDER FACE AP: \d{1,3}\.\d{2}%$", completed.stdout, re.MULTILINE)
    assert "images: 10 " in completed.stdout
    assert "10/10 images" in completed.stderr  # the progress's last line


@pytest.mark.parametrize(
    ("entry", "line", "message"),
    [
        # The crash the hardening issue found: int() takes 400 digits, float64 does not.
        ("1\n" + "9" * 400 + " 20 30 80 0 0 0 0 0 0\n", 3, "at most 7 digits"),
        ("9" * 400 + "\n", 2, "face count"),
        ("-3\n10 20 30 80 0 0 0 0 0 0\n", 2, "face count"),
        ("3\n10 20 30 80 0 0 0 0 0 0\n", 3, "file ends inside"),  # truncated
    ],
)
def test_eval_command_names_a_malformed_ground_truth_line(
    tmp_path: Path, model_root: Path, entry: str, line: int, message: str
) -> None:
    images_dir = tmp_path / "images"
    (images_dir / "0--Parade").mkdir(parents=True)
    # The image is present, so its entry is not skipped as belonging to another subset.
    cv2.imwrite(str(images_dir / "0--Parade" / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text("0--Parade/a.jpg\n" + entry)
    completed = run_cli(
        "eval", "--images", images_dir, "--gt", gt_file, "--models-dir", model_root,
        "--device", "CPU", "--no-progress",
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    (error,) = completed.stderr.splitlines()
    assert f"{gt_file}:{line}: " in error
    assert message in error
    assert len(error) < len(str(gt_file)) + 200


def test_eval_command_names_a_missing_ground_truth_file(tmp_path: Path, model_root: Path) -> None:
    missing = tmp_path / "no-such-gt.txt"
    completed = run_cli(
        "eval", "--images", tmp_path, "--gt", missing, "--models-dir", model_root
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert str(missing) in completed.stderr
