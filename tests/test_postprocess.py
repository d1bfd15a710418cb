"""`split_batch` and `to_detections`: the SSD head's edge cases, and property tests against a
plain per-row Python reference written here (independent of the vectorised code)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_facedet.inference.postprocess import split_batch, to_detections

if TYPE_CHECKING:
    from numpy.typing import NDArray

Rows = list[list[float]]


def row(image_id: float, conf: float, box: tuple[float, float, float, float]) -> list[float]:
    return [image_id, 1.0, conf, *box]


TERMINATOR = row(-1, 0.0, (0.0, 0.0, 0.0, 0.0))
BOX = (0.1, 0.2, 0.3, 0.4)


def merged(rows: Rows, *, n: int) -> NDArray[np.float32]:
    """A `[1, 1, n, 7]` output: `rows`, then zeros (what the CPU plugin leaves after `-1`)."""
    out = np.zeros((1, 1, n, 7), np.float32)
    if rows:
        out[0, 0, : len(rows)] = np.asarray(rows, np.float32)
    return out


# --- split_batch ---------------------------------------------------------------------------


def test_no_faces_first_row_terminator() -> None:
    raw = merged([TERMINATOR], n=200)
    (only,) = split_batch(raw, batch=1)
    assert only.shape == (0, 5)
    assert only.dtype == np.float32


def test_no_faces_in_any_image_of_a_batch() -> None:
    parts = split_batch(merged([TERMINATOR], n=800), batch=4)
    assert [p.shape for p in parts] == [(0, 5)] * 4


def test_exactly_200_faces_without_terminator() -> None:
    rows = [row(0, 0.5 + i / 1000, BOX) for i in range(200)]
    (only,) = split_batch(merged(rows, n=200), batch=1)
    assert only.shape == (200, 5)
    np.testing.assert_allclose(only[:, 0], [0.5 + i / 1000 for i in range(200)], rtol=1e-6)
    np.testing.assert_allclose(only[:, 1:], np.tile(BOX, (200, 1)), rtol=1e-6)


def test_rows_after_the_terminator_are_ignored() -> None:
    # The op spec: "the first tuple with batch_id -1 means end of output". What follows is
    # zeros or stale rows from the request's previous inference, which look like valid
    # image-0 and image-1 detections and must not leak into this result.
    rows = [
        row(0, 0.9, BOX),
        row(1, 0.8, BOX),
        TERMINATOR,
        row(0, 0.99, (0.5, 0.5, 0.6, 0.6)),
        row(1, 0.99, (0.5, 0.5, 0.6, 0.6)),
    ]
    first, second = split_batch(merged(rows, n=400), batch=2)
    np.testing.assert_allclose(first, [[0.9, *BOX]], rtol=1e-6)
    np.testing.assert_allclose(second, [[0.8, *BOX]], rtol=1e-6)


def test_zero_rows_after_terminator_do_not_become_image_0_faces() -> None:
    rows = [row(0, 0.9, BOX), row(2, 0.7, BOX), TERMINATOR]
    parts = split_batch(merged(rows, n=600), batch=3)
    assert [len(p) for p in parts] == [1, 0, 1]


def test_batch_with_images_missing() -> None:
    # Images 0 and 2 have no rows at all; 1 and 3 do.
    rows = [row(1, 0.9, BOX), row(1, 0.6, BOX), row(3, 0.7, BOX), TERMINATOR]
    parts = split_batch(merged(rows, n=800), batch=4)
    assert [len(p) for p in parts] == [0, 2, 0, 1]
    np.testing.assert_allclose(parts[1][:, 0], [0.9, 0.6], rtol=1e-6)
    np.testing.assert_allclose(parts[3][:, 0], [0.7], rtol=1e-6)


def test_rows_of_padding_images_are_discarded() -> None:
    # detect() pads a partial batch with black frames; only `batch` images are returned.
    rows = [row(0, 0.9, BOX), row(1, 0.8, BOX), row(2, 0.7, BOX), row(3, 0.6, BOX), TERMINATOR]
    parts = split_batch(merged(rows, n=800), batch=2)
    assert [p[:, 0].tolist() for p in parts] == [[pytest.approx(0.9)], [pytest.approx(0.8)]]


def test_unordered_image_ids_are_grouped_keeping_row_order() -> None:
    rows = [row(1, 0.9, BOX), row(0, 0.8, BOX), row(1, 0.7, BOX), row(0, 0.6, BOX), TERMINATOR]
    first, second = split_batch(merged(rows, n=400), batch=2)
    np.testing.assert_allclose(first[:, 0], [0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(second[:, 0], [0.9, 0.7], rtol=1e-6)


def test_per_image_layout() -> None:
    raw = np.zeros((3, 1, 200, 7), np.float32)
    raw[0, 0, :2] = [row(0, 0.9, BOX), TERMINATOR]
    raw[1, 0, :1] = [TERMINATOR]  # no faces; stale zeros follow
    raw[2, 0, :3] = [row(2, 0.8, BOX), row(2, 0.7, BOX), TERMINATOR]
    raw[2, 0, 3] = row(2, 0.99, BOX)  # stale, after the terminator
    parts = split_batch(raw, batch=3)
    assert [len(p) for p in parts] == [1, 0, 2]
    np.testing.assert_allclose(parts[2][:, 0], [0.8, 0.7], rtol=1e-6)


def test_per_image_layout_with_padding_slices() -> None:
    raw = np.zeros((4, 1, 200, 7), np.float32)
    for i in range(4):
        raw[i, 0, :2] = [row(i, 0.5 + i / 10, BOX), TERMINATOR]
    parts = split_batch(raw, batch=2)
    assert len(parts) == 2
    np.testing.assert_allclose([p[0, 0] for p in parts], [0.5, 0.6], rtol=1e-6)


def test_per_image_layout_with_fewer_slices_than_images() -> None:
    with pytest.raises(ValueError, match="2 images, 3 were submitted"):
        split_batch(np.zeros((2, 1, 200, 7), np.float32), batch=3)


@pytest.mark.parametrize(
    "shape", [(200, 7), (1, 200, 7), (1, 2, 200, 7), (1, 1, 200, 6), (1, 1, 200, 8)]
)
def test_wrong_output_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected detection_out of shape"):
        split_batch(np.zeros(shape, np.float32), batch=1)


# --- to_detections -------------------------------------------------------------------------


def cand(*rows: tuple[float, float, float, float, float]) -> NDArray[np.float32]:
    return np.asarray(rows, np.float32).reshape(-1, 5)


def test_threshold_is_inclusive() -> None:
    rows = cand((0.5, *BOX), (np.nextafter(np.float32(0.5), np.float32(0)), *BOX), (0.51, *BOX))
    found = to_detections(rows, frame_width=100, frame_height=100, confidence_threshold=0.5)
    np.testing.assert_array_equal(found.confidences, np.array([0.51, 0.5], np.float32))


def test_threshold_zero_and_one() -> None:
    rows = cand((0.0, *BOX), (1.0, *BOX), (0.3, *BOX))
    everything = to_detections(rows, frame_width=10, frame_height=10, confidence_threshold=0.0)
    assert len(everything) == 3
    only_certain = to_detections(rows, frame_width=10, frame_height=10, confidence_threshold=1.0)
    np.testing.assert_array_equal(only_certain.confidences, [1.0])


def test_boxes_are_clipped_to_the_frame() -> None:
    rows = cand((0.9, -0.2, -0.1, 0.5, 1.3))
    found = to_detections(rows, frame_width=640, frame_height=480, confidence_threshold=0.5)
    np.testing.assert_allclose(found.boxes_norm, [[0.0, 0.0, 0.5, 1.0]])
    np.testing.assert_allclose(found.boxes_px, [[0.0, 0.0, 320.0, 480.0]])


@pytest.mark.parametrize(
    "box",
    [
        (-0.5, 0.2, -0.1, 0.4),  # left of the frame
        (1.1, 0.2, 1.5, 0.4),  # right
        (0.2, -0.5, 0.4, -0.01),  # above
        (0.2, 1.0, 0.4, 1.4),  # below, touching the edge
        (0.4, 0.2, 0.3, 0.4),  # inverted
    ],
)
def test_boxes_wholly_outside_or_empty_are_dropped(box: tuple[float, float, float, float]) -> None:
    rows = cand((0.9, *box), (0.8, *BOX))
    found = to_detections(rows, frame_width=640, frame_height=480, confidence_threshold=0.5)
    np.testing.assert_array_equal(found.confidences, np.array([0.8], np.float32))


def test_min_face_px_is_on_the_height_in_frame_pixels() -> None:
    # 0.1 of 480 px = 48 px high, 64 px wide.
    rows = cand((0.9, 0.1, 0.1, 0.2, 0.2))
    kept = to_detections(
        rows, frame_width=640, frame_height=480, confidence_threshold=0.5, min_face_px=48
    )
    assert len(kept) == 1
    dropped = to_detections(
        rows, frame_width=640, frame_height=480, confidence_threshold=0.5, min_face_px=49
    )
    assert len(dropped) == 0


def test_roi_keeps_faces_whose_centre_is_inside() -> None:
    rows = cand(
        (0.9, 0.0, 0.0, 0.2, 0.2),  # centre (0.1, 0.1): outside
        (0.8, 0.2, 0.2, 0.6, 0.6),  # centre (0.4, 0.4): inside, box crosses the ROI edge
        (0.7, 0.4, 0.4, 0.6, 0.6),  # centre (0.5, 0.5): on the ROI's corner, inclusive
        (0.6, 0.45, 0.1, 0.55, 0.3),  # centre (0.5, 0.2): above
    )
    found = to_detections(
        rows, frame_width=100, frame_height=100, confidence_threshold=0.5, roi=(0.3, 0.3, 0.5, 0.5)
    )
    np.testing.assert_array_equal(found.confidences, np.array([0.8, 0.7], np.float32))


def test_sorted_by_confidence_descending_stable_for_ties() -> None:
    rows = cand(
        (0.6, 0.0, 0.0, 0.1, 0.1),
        (0.9, 0.1, 0.1, 0.2, 0.2),
        (0.6, 0.2, 0.2, 0.3, 0.3),
        (0.7, 0.3, 0.3, 0.4, 0.4),
    )
    found = to_detections(rows, frame_width=10, frame_height=10, confidence_threshold=0.5)
    np.testing.assert_array_equal(found.confidences, np.array([0.9, 0.7, 0.6, 0.6], np.float32))
    np.testing.assert_allclose(found.boxes_norm[:, 0], [0.1, 0.3, 0.0, 0.2], rtol=1e-6)


def test_no_candidates() -> None:
    found = to_detections(
        np.zeros((0, 5), np.float32), frame_width=10, frame_height=10, confidence_threshold=0.5
    )
    assert len(found) == 0
    assert found.boxes_px.shape == (0, 4)
    assert found.boxes_norm.shape == (0, 4)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (3, 7), (1, 3, 5)])
def test_wrong_rows_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected"):
        to_detections(
            np.zeros(shape, np.float32), frame_width=10, frame_height=10, confidence_threshold=0.5
        )


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-1, 10)])
def test_bad_frame_size(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="frame size"):
        to_detections(
            cand((0.9, *BOX)), frame_width=width, frame_height=height, confidence_threshold=0.5
        )


# --- property tests against a per-row reference --------------------------------------------


def reference_split(raw: NDArray[np.float32], batch: int) -> list[list[list[float]]]:
    """Read rows one at a time, as the op spec describes them."""
    out: list[list[list[float]]] = [[] for _ in range(batch)]
    if raw.shape[0] > 1:
        for image in range(batch):
            for values in raw[image, 0]:
                if values[0] < 0:
                    break
                out[image].append([float(v) for v in values[[2, 3, 4, 5, 6]]])
        return out
    for values in raw.reshape(-1, 7):
        if values[0] < 0:
            break
        image = int(values[0])
        if image < batch:
            out[image].append([float(v) for v in values[[2, 3, 4, 5, 6]]])
    return out


def reference_detections(
    rows: list[list[float]],
    *,
    width: int,
    height: int,
    threshold: float,
    min_face_px: int,
    roi: tuple[float, float, float, float] | None,
) -> list[tuple[float, list[float], list[float]]]:
    """(confidence, box_norm, box_px) per kept face, in float32 arithmetic like the model's."""
    f32 = np.float32
    kept = []
    for conf, *box in rows:
        if f32(conf) < threshold:
            continue
        norm = [min(max(f32(v), f32(0)), f32(1)) for v in box]
        px = [norm[0] * f32(width), norm[1] * f32(height), norm[2] * f32(width)]
        px.append(norm[3] * f32(height))
        if not (px[2] - px[0] > 0 and px[3] - px[1] > 0 and px[3] - px[1] >= min_face_px):
            continue
        if roi is not None:
            cx, cy = (norm[0] + norm[2]) * f32(0.5), (norm[1] + norm[3]) * f32(0.5)
            if not (roi[0] <= cx <= roi[2] and roi[1] <= cy <= roi[3]):
                continue
        kept.append((float(f32(conf)), [float(v) for v in norm], [float(v) for v in px]))
    return sorted(kept, key=lambda k: -k[0])  # sorted() is stable, like the code's argsort


coords = st.floats(-0.25, 1.25, width=32)
# Confidences cluster on a few values so ties and threshold-equality cases come up often.
confs = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0, 1, width=32))


@st.composite
def raw_outputs(draw: st.DrawFn) -> tuple[NDArray[np.float32], int]:
    batch = draw(st.integers(1, 4))
    per_image_layout = batch > 1 and draw(st.booleans())
    slots = draw(st.integers(batch, 4))  # images in the request, padding included
    keep_top_k = 12

    def image_rows(image_ids: list[int]) -> list[list[float]]:
        return [
            row(i, draw(confs), (draw(coords), draw(coords), draw(coords), draw(coords)))
            for i in image_ids
        ]

    def stale(count: int) -> list[list[float]]:
        ids = draw(st.lists(st.integers(0, slots - 1), min_size=count, max_size=count))
        return image_rows(ids)

    if per_image_layout:
        raw = np.zeros((slots, 1, keep_top_k, 7), np.float32)
        for image in range(slots):
            count = draw(st.integers(0, keep_top_k))
            rows = image_rows([image] * count)
            if count < keep_top_k:
                rows += [TERMINATOR, *stale(keep_top_k - count - 1)]
            raw[image, 0] = np.asarray(rows, np.float32).reshape(keep_top_k, 7)
        return raw, batch
    n = keep_top_k * slots
    ids = sorted(draw(st.lists(st.integers(0, slots - 1), max_size=n)))
    if draw(st.booleans()):
        # Rows not grouped by image: split_batch's sorting branch (a stable sort, which must
        # keep each image's rows in their order), otherwise reached by one example test only.
        ids = draw(st.permutations(ids))
    rows = image_rows(ids)
    if len(rows) < n:
        rows += [TERMINATOR, *stale(n - len(rows) - 1)]
    return np.asarray(rows, np.float32).reshape(1, 1, n, 7), batch


rois = st.none() | st.tuples(
    st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0.5, 1), st.floats(0.5, 1)
)


@settings(max_examples=300, deadline=None)
@given(
    output=raw_outputs(),
    width=st.integers(1, 1920),
    height=st.integers(1, 1080),
    threshold=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1),
    min_face_px=st.integers(0, 300),
    roi=rois,
)
def test_matches_per_row_reference(
    output: tuple[NDArray[np.float32], int],
    width: int,
    height: int,
    threshold: float,
    min_face_px: int,
    roi: tuple[float, float, float, float] | None,
) -> None:
    raw, batch = output
    parts = split_batch(raw, batch=batch)
    expected_parts = reference_split(raw, batch)
    assert len(parts) == batch
    for part, expected_rows in zip(parts, expected_parts, strict=True):
        assert part.dtype == np.float32
        np.testing.assert_array_equal(part, np.asarray(expected_rows, np.float32).reshape(-1, 5))
        found = to_detections(
            part,
            frame_width=width,
            frame_height=height,
            confidence_threshold=threshold,
            min_face_px=min_face_px,
            roi=roi,
        )
        # The properties every consumer relies on.
        assert np.all(found.confidences >= np.float32(threshold))
        assert np.all(np.diff(found.confidences) <= 0)
        boxes = found.boxes_px
        assert np.all((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 0] < boxes[:, 2]))
        assert np.all((boxes[:, 1] >= 0) & (boxes[:, 3] <= height) & (boxes[:, 1] < boxes[:, 3]))
        assert np.all((found.boxes_norm >= 0) & (found.boxes_norm <= 1))
        # And exactly what the per-row reference keeps, in the same order.
        expected = reference_detections(
            expected_rows,
            width=width,
            height=height,
            threshold=threshold,
            min_face_px=min_face_px,
            roi=roi,
        )
        assert found.confidences.tolist() == [e[0] for e in expected]
        assert found.boxes_norm.tolist() == [e[1] for e in expected]
        assert found.boxes_px.tolist() == [e[2] for e in expected]
