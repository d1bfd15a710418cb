"""Accuracy evaluation of the detector on WIDER FACE: the `edge-facedet eval` command body.

Owns the evaluation loop (the ground truth is `edge_facedet.tools.groundtruth`'s) that pushes
the images through the service's own detector (`Detector.detect`: its pre-processing, batching
and asynchronous requests), then scores the detections with the model card's AP protocol
(`edge_facedet.tools.average_precision`). The loop follows that protocol's side too: a plain
resize to the network input (no letterbox), every prediction kept (no threshold), and the
normalised boxes scaled to the image without clipping, as the accuracy checker's
`resize_prediction_boxes` does (the service's `to_detections` clips them to the frame). The
dataset, and the protocol spelt out, are in `../shared/eval/wider-face-val-dev/` beside the
checkout.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
import numpy as np

from edge_facedet._compat import BaseExceptionGroup, TaskGroup
from edge_facedet.tools.average_precision import (
    MAX_FACE_HEIGHT,
    MIN_FACE_HEIGHT,
    compute_average_precision,
)
from edge_facedet.tools.groundtruth import FaceAnnotations, GroundTruthError, read_ground_truth
from edge_facedet.tools.imageheader import DEFAULT_MAX_PIXELS, pixel_cap_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from numpy.typing import NDArray

    from edge_facedet.inference.detector import Detector, DetectorInfo, OpenVinoDetector

__all__ = [
    "EvalResult",
    "EvaluationError",
    "FaceAnnotations",
    "GroundTruthError",
    "ProgressLine",
    "evaluate",
    "read_ground_truth",
    "run_eval",
    "scale_to_image",
]


class EvaluationError(Exception):
    """The evaluation cannot run on its inputs (one-line message naming the offending file).

    A malformed ground truth is a `GroundTruthError` (a `ValueError`) instead."""


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


# --- the evaluation loop ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoadedImage:
    resized: NDArray[np.uint8]
    width: int
    height: int


def _load_resized(path: Path, *, input_size: tuple[int, int], max_pixels: int) -> _LoadedImage:
    """Decode and plainly resize one image (runs in a worker thread)."""
    problem = pixel_cap_problem(path, max_pixels=max_pixels)
    if problem is not None:
        raise EvaluationError(f"{path}: {problem}")
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvaluationError(f"{path}: cannot be decoded as an image: {reason}") from None
    if image is None:
        raise EvaluationError(f"{path}: cannot be decoded as an image")
    height, width = image.shape[:2]
    # The protocol's plain resize: bilinear, aspect ratio not kept, no letterbox.
    resized = cv2.resize(image, input_size, interpolation=cv2.INTER_LINEAR)
    # imread(IMREAD_COLOR) gives uint8 BGR; asarray only narrows the stub's type, no copy.
    return _LoadedImage(
        resized=np.asarray(resized, dtype=np.uint8), width=int(width), height=int(height)
    )


def _load_batch(
    paths: Sequence[Path], *, input_size: tuple[int, int], max_pixels: int
) -> list[_LoadedImage]:
    return [_load_resized(path, input_size=input_size, max_pixels=max_pixels) for path in paths]


def scale_to_image(rows: NDArray[np.float32], *, width: int, height: int) -> NDArray[np.float32]:
    """(M, 4) boxes of one image's rows (confidence + normalised box) in its pixels, unclipped.

    In float32, as the accuracy checker's in-place `resize_prediction_boxes` computes them, so
    the protocol's rounding to integers sees the same values.
    """
    scale = np.array([width, height, width, height], np.float32)
    boxes: NDArray[np.float32] = np.asarray(rows[:, 1:5], dtype=np.float32) * scale
    return boxes


@dataclass(slots=True)
class _DetectionRun:
    """Pushes the annotated images through the detector; predictions land by image index."""

    detector: Detector
    images_dir: Path
    annotations: list[FaceAnnotations]
    progress: Callable[[int, int], None] | None
    slots: asyncio.Semaphore
    max_pixels: int
    boxes: list[NDArray[np.float32]] = field(default_factory=list)
    scores: list[NDArray[np.float32]] = field(default_factory=list)
    done: int = 0

    def batches(self) -> list[list[int]]:
        total, size = len(self.annotations), self.detector.batch_size
        return [list(range(start, min(start + size, total))) for start in range(0, total, size)]

    async def worker(self, batches: Iterator[list[int]]) -> None:
        # The shared iterator hands each batch to exactly one worker; results land by image
        # index, so the completion order does not matter.
        for batch in batches:
            paths = [self.images_dir / self.annotations[i].image for i in batch]
            loaded = await asyncio.to_thread(
                _load_batch,
                paths,
                input_size=self.detector.input_size,
                max_pixels=self.max_pixels,
            )
            async with self.slots:
                result = await self.detector.detect([image.resized for image in loaded])
            for index, image, rows in zip(batch, loaded, result.rows, strict=True):
                self.boxes[index] = scale_to_image(rows, width=image.width, height=image.height)
                self.scores[index] = np.asarray(rows[:, 0], dtype=np.float32)
            self.done += len(batch)
            if self.progress is not None:
                self.progress(self.done, len(self.annotations))

    async def run(self, *, workers: int) -> None:
        total = len(self.annotations)
        self.boxes = [np.zeros((0, 4), np.float32)] * total
        self.scores = [np.zeros(0, np.float32)] * total
        batches = self.batches()
        shared = iter(batches)
        if self.progress is not None:
            self.progress(0, total)
        try:
            async with TaskGroup() as group:
                for _ in range(min(workers, len(batches))):
                    group.create_task(self.worker(shared))
        except BaseExceptionGroup as failure:
            # The first failing batch (an unreadable image, say) cancels the others; callers
            # get its own exception, not a group, so `except EvaluationError` works for them.
            raise failure.exceptions[0] from None


def _annotated_images(*, gt_file: Path, images_dir: Path) -> list[FaceAnnotations]:
    """The ground truth of the images present in `images_dir`; EvaluationError if none."""
    annotations = read_ground_truth(gt_file=gt_file, images_dir=images_dir)
    if not annotations:
        raise EvaluationError(f"no image annotated in {gt_file} is present under {images_dir}")
    return annotations


async def evaluate(
    *,
    detector: Detector,
    images_dir: Path,
    gt_file: Path,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> EvalResult:
    """Run `detector` over every annotated image in `images_dir` and compute the AP.

    Images are decoded and resized in worker threads. At most `detector.max_inflight` batches
    are in `detect` at once; `concurrency` is how many batches may be loading or waiting for
    a detector slot. Its default, twice `max_inflight`, has the next batches decoded while the
    current ones infer, so the inference requests never wait for a JPEG decoder.
    `progress(done, total)` is called on the loop with the number of images finished. An
    image whose header declares more than `max_pixels` is an `EvaluationError`, undecoded.
    """
    annotations = await asyncio.to_thread(_annotated_images, gt_file=gt_file, images_dir=images_dir)
    return await _evaluate_annotations(
        detector=detector,
        images_dir=images_dir,
        annotations=annotations,
        progress=progress,
        concurrency=concurrency,
        max_pixels=max_pixels,
    )


async def _evaluate_annotations(
    *,
    detector: Detector,
    images_dir: Path,
    annotations: list[FaceAnnotations],
    progress: Callable[[int, int], None] | None,
    concurrency: int | None,
    max_pixels: int,
) -> EvalResult:
    inflight = max(1, detector.max_inflight)
    workers = concurrency if concurrency is not None else 2 * inflight
    if workers < 1:
        raise ValueError(f"concurrency must be >= 1, got {workers}")
    run = _DetectionRun(
        detector=detector,
        images_dir=images_dir,
        annotations=annotations,
        progress=progress,
        slots=asyncio.Semaphore(inflight),
        max_pixels=max_pixels,
    )
    started = time.perf_counter()
    await run.run(workers=workers)
    seconds = time.perf_counter() - started
    average_precision = compute_average_precision(
        gt_boxes=[annotation.boxes for annotation in annotations],
        pred_boxes=run.boxes,
        pred_scores=run.scores,
    )
    return EvalResult(
        ap=average_precision.ap,
        images=len(annotations),
        gt_faces_counted=average_precision.gt_faces_counted,
        gt_faces_ignored=average_precision.gt_faces_ignored,
        detections=sum(int(scores.size) for scores in run.scores),
        seconds=seconds,
        images_per_second=len(annotations) / seconds if seconds > 0 else math.inf,
    )


# --- the command --------------------------------------------------------------------------


class ProgressLine:
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


def _missing_input(*, images_dir: Path, gt_file: Path, model_xml: Path) -> str | None:
    for path, what, exists in (
        (images_dir, "images folder", images_dir.is_dir()),
        (gt_file, "ground-truth file", gt_file.is_file()),
        (model_xml, "model file", model_xml.is_file()),
    ):
        if not exists:
            return f"{what} {path} does not exist"
    return None


def _write_report(out: TextIO, *, result: EvalResult, info: DetectorInfo) -> None:
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


def _load_detector(
    *, model_xml: Path, device: str, batch_size: int, inference_precision: str | None
) -> OpenVinoDetector:
    """The model compiled for `device`; an absent device is an `EvaluationError` (usage)."""
    import openvino as ov  # noqa: PLC0415 - OpenVINO loads slowly

    from edge_facedet.inference.detector import OpenVinoDetector  # noqa: PLC0415

    try:
        core = ov.Core()
        if inference_precision is not None:
            core.set_property("CPU", {"INFERENCE_PRECISION_HINT": inference_precision})
        return OpenVinoDetector(
            model_xml=model_xml, device=device, batch_size=batch_size, core=core
        )
    except (RuntimeError, ValueError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvaluationError(f"--device {device}: cannot load {model_xml}: {reason}") from None


def run_eval(
    *,
    images_dir: Path,
    gt_file: Path,
    model_xml: Path,
    device: str = "AUTO",
    batch_size: int = 1,
    inference_precision: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    out: TextIO,
    err: TextIO,
    show_progress: bool = True,
) -> int:
    """`edge-facedet eval`: AP of the service's detector path; returns the exit status.

    `inference_precision` ("f32", "bf16") overrides the CPU plugin's default, which is bf16
    on a CPU with AVX512_BF16 or AMX and f32 elsewhere; the dataset README's reference
    figures were taken with bf16 (docs/detector-benchmark.md, "Accuracy").
    0 on success; 2 when an input (images folder, ground truth, model, device, an image) is
    missing or unusable, with one line naming it on `err`. The ground truth is read before
    the model is compiled, so a malformed file is reported at once.
    """
    problem = _missing_input(images_dir=images_dir, gt_file=gt_file, model_xml=model_xml)
    if problem is not None:
        err.write(f"edge-facedet eval: {problem}\n")
        return 2

    async def compile_and_evaluate() -> tuple[DetectorInfo, EvalResult]:
        annotations = await asyncio.to_thread(
            _annotated_images, gt_file=gt_file, images_dir=images_dir
        )
        # Compilation blocks for seconds; keep it off the loop like the service does.
        detector = await asyncio.to_thread(
            _load_detector,
            model_xml=model_xml,
            device=device,
            batch_size=batch_size,
            inference_precision=inference_precision,
        )
        result = await _evaluate_annotations(
            detector=detector,
            images_dir=images_dir,
            annotations=annotations,
            progress=ProgressLine(stream=err) if show_progress else None,
            concurrency=None,
            max_pixels=max_pixels,
        )
        return detector.info, result

    try:
        info, result = asyncio.run(compile_and_evaluate())
    except (EvaluationError, GroundTruthError) as exc:
        err.write(f"edge-facedet eval: {exc}\n")
        return 2
    _write_report(out, result=result, info=info)
    return 0
