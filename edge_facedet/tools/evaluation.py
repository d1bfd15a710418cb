"""Accuracy evaluation of the detector on WIDER FACE: the `edge-facedet eval` command body.

Owns the WIDER FACE ground-truth parser, the AP computation of the model card's protocol
(see /work/shared/eval/wider-face-val-dev/README.md), and the evaluation loop that pushes the
images through the service's own detector path (`Detector.detect` then
`postprocess.to_detections` with no threshold), so the figure measures what the service runs.

The protocol: plain resize to the network input (no letterbox); predictions are not filtered;
ground-truth faces whose box height is outside [64, 1024] px are ignored (a detection whose
best-IoU face is ignored is neither a true nor a false positive); a detection is a true
positive at IoU >= 0.5 with greedy matching by descending confidence, each face matched at
most once (Pascal VOC); AP is the area under the all-point interpolated precision/recall
curve (VOC 2010+).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
import numpy as np

from edge_facedet.inference.postprocess import to_detections

if sys.version_info >= (3, 11):
    from asyncio import TaskGroup
else:  # pragma: no cover - exercised on Python 3.10 only
    from exceptiongroup import BaseExceptionGroup
    from taskgroup import TaskGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

    from edge_facedet.inference.detector import Detector

__all__ = [
    "MAX_FACE_HEIGHT",
    "MIN_FACE_HEIGHT",
    "AveragePrecision",
    "EvalResult",
    "EvaluationError",
    "FaceAnnotations",
    "GroundTruthError",
    "compute_average_precision",
    "evaluate",
    "pairwise_iou",
    "read_ground_truth",
    "run_eval",
]

MIN_FACE_HEIGHT = 64
MAX_FACE_HEIGHT = 1024
IOU_THRESHOLD = 0.5

# x y w h blur expression illumination invalid occlusion pose
_FIELDS_PER_FACE = 10
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class EvaluationError(Exception):
    """The evaluation cannot run on its inputs (one-line message naming the offending file)."""


class GroundTruthError(EvaluationError):
    """The ground-truth file is malformed; the message is `file:line: what is wrong`."""


@dataclass(frozen=True, slots=True)
class FaceAnnotations:
    """The annotated faces of one image."""

    image: str
    """Path relative to the images folder, as written in the ground-truth file."""
    boxes: NDArray[np.float64]
    """(N, 4) x_min, y_min, x_max, y_max in pixels of the original image."""


@dataclass(frozen=True, slots=True)
class AveragePrecision:
    """The AP and the counts behind it."""

    ap: float
    """In [0, 1]; NaN when no ground-truth face counts (recall is undefined)."""
    gt_faces_counted: int
    gt_faces_ignored: int
    true_positives: int
    false_positives: int
    detections_ignored: int
    """Detections whose best-IoU face is an ignored one: neither true nor false positives."""


@dataclass(frozen=True, slots=True)
class EvalResult:
    """One evaluation run of a detector over an images folder."""

    ap: float
    images: int
    gt_faces_counted: int
    gt_faces_ignored: int
    detections: int
    """Every box the model emitted (threshold 0.0), ignored ones included."""
    seconds: float
    """Wall time of the image loading and inference loop (compilation excluded)."""
    images_per_second: float


# --- ground truth -------------------------------------------------------------------------


def _parse_face_line(text: str, *, gt_file: Path, line_number: int) -> list[int]:
    fields = text.split()
    if len(fields) != _FIELDS_PER_FACE:
        raise GroundTruthError(
            f"{gt_file}:{line_number}: expected {_FIELDS_PER_FACE} integers "
            f"(x y w h blur expression illumination invalid occlusion pose), got {text.strip()!r}"
        )
    try:
        values = [int(field) for field in fields]
    except ValueError:
        raise GroundTruthError(
            f"{gt_file}:{line_number}: face fields must be integers, got {text.strip()!r}"
        ) from None
    if values[2] < 0 or values[3] < 0:
        raise GroundTruthError(f"{gt_file}:{line_number}: negative box width or height")
    return values


def read_ground_truth(*, gt_file: Path, images_dir: Path | None = None) -> list[FaceAnnotations]:
    """Parse `wider_face_val_bbx_gt.txt`, in file order.

    With `images_dir`, only the images present in it are returned (a subset folder holds a
    sample of the images the official file annotates). Raises `GroundTruthError` naming the
    file and line of the first malformed entry.
    """
    try:
        lines = gt_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GroundTruthError(f"{gt_file}: cannot read the ground truth: {exc}") from exc
    annotations: list[FaceAnnotations] = []
    seen: set[str] = set()
    index = 0
    while index < len(lines):
        name = lines[index].strip()
        name_line = index + 1
        index += 1
        if not name:
            continue  # blank lines between entries or at the end carry nothing
        if not name.lower().endswith(_IMAGE_SUFFIXES):
            raise GroundTruthError(f"{gt_file}:{name_line}: expected an image name, got {name!r}")
        if name in seen:
            raise GroundTruthError(f"{gt_file}:{name_line}: image {name} is annotated twice")
        seen.add(name)
        if index >= len(lines):
            raise GroundTruthError(f"{gt_file}:{name_line}: {name} has no face count line")
        count_text = lines[index].strip()
        try:
            count = int(count_text)
        except ValueError:
            count = -1
        if count < 0:
            raise GroundTruthError(
                f"{gt_file}:{index + 1}: expected the face count of {name}, got {count_text!r}"
            )
        index += 1
        # The official file writes one all-zero face line after a count of 0.
        lines_to_read = max(count, 1)
        if index + lines_to_read > len(lines):
            raise GroundTruthError(
                f"{gt_file}:{len(lines)}: file ends inside the {count} faces of {name} "
                f"(entry at line {name_line})"
            )
        faces = [
            _parse_face_line(lines[index + offset], gt_file=gt_file, line_number=index + offset + 1)
            for offset in range(lines_to_read)
        ]
        index += lines_to_read
        if images_dir is not None and not (images_dir / name).is_file():
            continue
        xywh = np.array(faces[:count], dtype=np.float64).reshape(-1, _FIELDS_PER_FACE)[:, :4]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)
        annotations.append(FaceAnnotations(image=name, boxes=boxes))
    return annotations


# --- average precision --------------------------------------------------------------------


def pairwise_iou(
    boxes_a: NDArray[np.floating], boxes_b: NDArray[np.floating]
) -> NDArray[np.float64]:
    """(A, B) intersection over union of x_min, y_min, x_max, y_max boxes (continuous coords)."""
    first = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, np.newaxis, :2], second[np.newaxis, :, :2])
    bottom_right = np.minimum(first[:, np.newaxis, 2:], second[np.newaxis, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_first = np.prod(np.clip(first[:, 2:] - first[:, :2], 0.0, None), axis=1)
    area_second = np.prod(np.clip(second[:, 2:] - second[:, :2], 0.0, None), axis=1)
    union = area_first[:, np.newaxis] + area_second[np.newaxis, :] - intersection
    iou: NDArray[np.float64] = np.divide(
        intersection, union, out=np.zeros_like(intersection), where=union > 0.0
    )
    return iou


def _match_image(
    *,
    gt_boxes: NDArray[np.float64],
    gt_ignored: NDArray[np.bool_],
    pred_boxes: NDArray[np.floating],
    pred_scores: NDArray[np.floating],
    iou_threshold: float,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """One image's scored detections that count, and whether each is a true positive."""
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if gt_boxes.shape[0] == 0 or scores.size == 0:
        return scores, np.zeros(scores.shape, np.bool_)
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    iou = pairwise_iou(np.asarray(pred_boxes).reshape(-1, 4)[order], gt_boxes)
    # The VOC rule: each detection looks only at its best-IoU face among all faces, ignored
    # ones included; which faces are taken does not change that choice, so it vectorises.
    best_gt = np.argmax(iou, axis=1)
    best_iou = iou[np.arange(scores.size), best_gt]
    overlaps = best_iou >= iou_threshold
    dropped = overlaps & gt_ignored[best_gt]
    candidates = np.flatnonzero(overlaps & ~dropped)
    # Greedy by descending confidence: the first (highest-scored) detection on a face takes
    # it; later detections whose best face it is are duplicates, hence false positives.
    _, first_of_each_face = np.unique(best_gt[candidates], return_index=True)
    is_true_positive = np.zeros(scores.size, np.bool_)
    is_true_positive[candidates[first_of_each_face]] = True
    return scores[~dropped], is_true_positive[~dropped]


def compute_average_precision(
    *,
    gt_boxes: Sequence[NDArray[np.floating]],
    pred_boxes: Sequence[NDArray[np.floating]],
    pred_scores: Sequence[NDArray[np.floating]],
    min_face_height: float = MIN_FACE_HEIGHT,
    max_face_height: float = MAX_FACE_HEIGHT,
    iou_threshold: float = IOU_THRESHOLD,
) -> AveragePrecision:
    """AP over a set of images; the three sequences are aligned per image.

    `gt_boxes[i]` (G, 4) and `pred_boxes[i]` (D, 4) are x_min, y_min, x_max, y_max in the
    same pixel space; `pred_scores[i]` (D,) the detection confidences.
    """
    if not len(gt_boxes) == len(pred_boxes) == len(pred_scores):
        raise ValueError(
            f"per-image sequences differ in length: {len(gt_boxes)} ground truths, "
            f"{len(pred_boxes)} box arrays, {len(pred_scores)} score arrays"
        )
    all_scores: list[NDArray[np.float64]] = []
    all_true_positive: list[NDArray[np.bool_]] = []
    counted = ignored = detections_ignored = 0
    for image_gt, image_boxes, image_scores in zip(gt_boxes, pred_boxes, pred_scores, strict=True):
        faces = np.asarray(image_gt, dtype=np.float64).reshape(-1, 4)
        heights = faces[:, 3] - faces[:, 1]
        gt_ignored = (heights < min_face_height) | (heights > max_face_height)
        scores, true_positive = _match_image(
            gt_boxes=faces,
            gt_ignored=gt_ignored,
            pred_boxes=image_boxes,
            pred_scores=image_scores,
            iou_threshold=iou_threshold,
        )
        counted += int(np.count_nonzero(~gt_ignored))
        ignored += int(np.count_nonzero(gt_ignored))
        detections_ignored += int(np.asarray(image_scores).size) - scores.size
        all_scores.append(scores)
        all_true_positive.append(true_positive)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float64)
    true_positive = (
        np.concatenate(all_true_positive) if all_true_positive else np.zeros(0, np.bool_)
    )
    true_positives = int(np.count_nonzero(true_positive))
    false_positives = int(true_positive.size) - true_positives
    return AveragePrecision(
        ap=_all_point_ap(scores=scores, true_positive=true_positive, positives=counted),
        gt_faces_counted=counted,
        gt_faces_ignored=ignored,
        true_positives=true_positives,
        false_positives=false_positives,
        detections_ignored=detections_ignored,
    )


def _all_point_ap(
    *, scores: NDArray[np.float64], true_positive: NDArray[np.bool_], positives: int
) -> float:
    """Area under the precision/recall curve, precision made monotone (VOC 2010+)."""
    if positives == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    ranked = true_positive[order]
    cumulative_tp = np.cumsum(ranked, dtype=np.float64)
    cumulative_fp = np.cumsum(~ranked, dtype=np.float64)
    recall = np.concatenate(([0.0], cumulative_tp / positives, [1.0]))
    precision = np.concatenate(
        ([0.0], cumulative_tp / np.maximum(cumulative_tp + cumulative_fp, 1.0), [0.0])
    )
    # Interpolated precision at recall r: the best precision at any recall >= r.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


# --- the evaluation loop ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoadedImage:
    resized: NDArray[np.uint8]
    width: int
    height: int


def _load_resized(path: Path, *, input_size: tuple[int, int]) -> _LoadedImage:
    """Decode and plainly resize one image (runs in a worker thread)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise EvaluationError(f"{path}: cannot be decoded as an image")
    height, width = image.shape[:2]
    # The protocol's plain resize: bilinear, aspect ratio not kept, no letterbox.
    resized = cv2.resize(image, input_size, interpolation=cv2.INTER_LINEAR)
    # imread(IMREAD_COLOR) gives uint8 BGR; asarray only narrows the stub's type, no copy.
    return _LoadedImage(
        resized=np.asarray(resized, dtype=np.uint8), width=int(width), height=int(height)
    )


def _load_batch(paths: Sequence[Path], *, input_size: tuple[int, int]) -> list[_LoadedImage]:
    return [_load_resized(path, input_size=input_size) for path in paths]


async def evaluate(
    *,
    detector: Detector,
    images_dir: Path,
    gt_file: Path,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int | None = None,
) -> EvalResult:
    """Run `detector` over every annotated image in `images_dir` and compute the AP.

    Images are decoded and resized in worker threads. At most `detector.max_inflight` batches
    are in `detect` at once; `concurrency` is how many batches may be loading or waiting for
    a detector slot. Its default, twice `max_inflight`, has the next batches decoded while the
    current ones infer, so the inference requests never wait for a JPEG decoder.
    `progress(done, total)` is called on the loop with the number of images finished.
    """
    inflight = max(1, detector.max_inflight)
    workers = concurrency if concurrency is not None else 2 * inflight
    if workers < 1:
        raise ValueError(f"concurrency must be >= 1, got {workers}")
    detector_slots = asyncio.Semaphore(inflight)
    annotations = await asyncio.to_thread(read_ground_truth, gt_file=gt_file, images_dir=images_dir)
    if not annotations:
        raise EvaluationError(f"no image annotated in {gt_file} is present under {images_dir}")
    total = len(annotations)
    batch_size = detector.batch_size
    batches = [
        list(range(start, min(start + batch_size, total))) for start in range(0, total, batch_size)
    ]
    pred_boxes: list[NDArray[np.float32]] = [np.zeros((0, 4), np.float32)] * total
    pred_scores: list[NDArray[np.float32]] = [np.zeros(0, np.float32)] * total
    next_batch = iter(batches)
    done = 0
    if progress is not None:
        progress(0, total)

    async def worker() -> None:
        nonlocal done
        # The shared iterator hands each batch to exactly one worker; results land by image
        # index, so the completion order does not matter.
        for batch in next_batch:
            paths = [images_dir / annotations[i].image for i in batch]
            loaded = await asyncio.to_thread(_load_batch, paths, input_size=detector.input_size)
            async with detector_slots:
                result = await detector.detect([image.resized for image in loaded])
            for image_index, image, rows in zip(batch, loaded, result.rows, strict=True):
                detections = to_detections(
                    rows,
                    frame_width=image.width,
                    frame_height=image.height,
                    confidence_threshold=0.0,
                )
                pred_boxes[image_index] = detections.boxes_px
                pred_scores[image_index] = detections.confidences
            done += len(batch)
            if progress is not None:
                progress(done, total)

    started = time.perf_counter()
    try:
        async with TaskGroup() as group:
            for _ in range(min(workers, len(batches))):
                group.create_task(worker())
    except BaseExceptionGroup as failure:
        # The first failing batch (an unreadable image, say) cancels the others; callers get
        # its own exception, not a group, so `except EvaluationError` works for them.
        raise failure.exceptions[0] from None
    seconds = time.perf_counter() - started
    average_precision = compute_average_precision(
        gt_boxes=[annotation.boxes for annotation in annotations],
        pred_boxes=pred_boxes,
        pred_scores=pred_scores,
    )
    return EvalResult(
        ap=average_precision.ap,
        images=total,
        gt_faces_counted=average_precision.gt_faces_counted,
        gt_faces_ignored=average_precision.gt_faces_ignored,
        detections=sum(int(scores.size) for scores in pred_scores),
        seconds=seconds,
        images_per_second=total / seconds if seconds > 0 else math.inf,
    )


# --- the command --------------------------------------------------------------------------


class _ProgressLine:
    """`  123/489 images  25.3 img/s` on a terminal (one rewritten line), else every ~10%."""

    def __init__(self, *, stream: TextIO) -> None:
        self._stream = stream
        self._interactive = stream.isatty()
        self._started = time.perf_counter()
        self._next_report = 0.0

    def __call__(self, done: int, total: int) -> None:
        if done == 0:
            self._started = time.perf_counter()
        elapsed = time.perf_counter() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"  {done}/{total} images  {rate:.1f} img/s"
        if self._interactive:
            self._stream.write(f"\r{text}")
            if done >= total:
                self._stream.write("\n")
        elif done >= total or done / total >= self._next_report:
            self._stream.write(f"{text}\n")
            # A log file gets about ten lines whatever the batch size.
            self._next_report = math.floor(done / total * 10 + 1) / 10
        self._stream.flush()


def run_eval(
    *,
    images_dir: Path,
    gt_file: Path,
    model_xml: Path,
    device: str = "AUTO",
    batch_size: int = 1,
    out: TextIO,
    err: TextIO,
    show_progress: bool = True,
) -> int:
    """`edge-facedet eval`: AP of the service's detector path; returns the exit status.

    0 on success; 2 when an input (images folder, ground truth, model, an image) is missing
    or unusable, with a message naming it on `err`.
    """
    for path, what, exists in (
        (images_dir, "images folder", images_dir.is_dir()),
        (gt_file, "ground-truth file", gt_file.is_file()),
        (model_xml, "model file", model_xml.is_file()),
    ):
        if not exists:
            err.write(f"edge-facedet eval: {what} {path} does not exist\n")
            return 2
    from edge_facedet.inference.detector import OpenVinoDetector  # noqa: PLC0415 - OpenVINO loads slowly

    async def compile_and_evaluate() -> tuple[OpenVinoDetector, EvalResult]:
        # Compilation blocks for seconds; keep it off the loop like the service does.
        detector = await asyncio.to_thread(
            OpenVinoDetector, model_xml=model_xml, device=device, batch_size=batch_size
        )
        result = await evaluate(
            detector=detector,
            images_dir=images_dir,
            gt_file=gt_file,
            progress=_ProgressLine(stream=err) if show_progress else None,
        )
        return detector, result

    try:
        detector, result = asyncio.run(compile_and_evaluate())
    except EvaluationError as exc:
        err.write(f"edge-facedet eval: {exc}\n")
        return 2
    info = detector.info
    out.write(
        f"WIDER FACE AP: {result.ap * 100:.2f}%\n"
        f"images: {result.images}  faces counted: {result.gt_faces_counted}  "
        f"faces ignored (height outside [{MIN_FACE_HEIGHT}, {MAX_FACE_HEIGHT}] px): "
        f"{result.gt_faces_ignored}  detections: {result.detections}\n"
        f"speed: {result.images_per_second:.1f} images/s ({result.seconds:.1f} s)\n"
        f"model: {info.model_name} {info.precision}  device: {info.requested_device} "
        f"({', '.join(info.execution_devices)})  batch: {info.batch_size}  "
        f"infer requests: {info.infer_requests}\n"
    )
    out.flush()
    return 0
