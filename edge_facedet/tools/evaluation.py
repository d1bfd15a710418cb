"""Accuracy evaluation of the detector on WIDER FACE: the `edge-facedet eval` command body.

Owns the WIDER FACE ground-truth parser and the evaluation loop that pushes the images through
the service's own detector (`Detector.detect`: its pre-processing, batching and asynchronous
requests), then scores the detections with the model card's AP protocol
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

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from numpy.typing import NDArray

    from edge_facedet.inference.detector import Detector, DetectorInfo

__all__ = [
    "EvalResult",
    "EvaluationError",
    "FaceAnnotations",
    "GroundTruthError",
    "evaluate",
    "read_ground_truth",
    "run_eval",
]

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


def _scale_to_image(rows: NDArray[np.float32], *, width: int, height: int) -> NDArray[np.float32]:
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
                _load_batch, paths, input_size=self.detector.input_size
            )
            async with self.slots:
                result = await self.detector.detect([image.resized for image in loaded])
            for index, image, rows in zip(batch, loaded, result.rows, strict=True):
                self.boxes[index] = _scale_to_image(rows, width=image.width, height=image.height)
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
    annotations = await asyncio.to_thread(read_ground_truth, gt_file=gt_file, images_dir=images_dir)
    if not annotations:
        raise EvaluationError(f"no image annotated in {gt_file} is present under {images_dir}")
    run = _DetectionRun(
        detector=detector,
        images_dir=images_dir,
        annotations=annotations,
        progress=progress,
        slots=asyncio.Semaphore(inflight),
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


def run_eval(
    *,
    images_dir: Path,
    gt_file: Path,
    model_xml: Path,
    device: str = "AUTO",
    batch_size: int = 1,
    inference_precision: str | None = None,
    out: TextIO,
    err: TextIO,
    show_progress: bool = True,
) -> int:
    """`edge-facedet eval`: AP of the service's detector path; returns the exit status.

    `inference_precision` ("f32", "bf16") overrides the CPU plugin's default, which is bf16
    on a CPU with AVX512_BF16 or AMX and f32 elsewhere; the dataset README's reference
    figures were taken with bf16 (docs/detector-benchmark.md, "Accuracy").
    0 on success; 2 when an input (images folder, ground truth, model, an image) is missing
    or unusable, with a message naming it on `err`.
    """
    problem = _missing_input(images_dir=images_dir, gt_file=gt_file, model_xml=model_xml)
    if problem is not None:
        err.write(f"edge-facedet eval: {problem}\n")
        return 2
    import openvino as ov  # noqa: PLC0415 - OpenVINO loads slowly

    from edge_facedet.inference.detector import OpenVinoDetector  # noqa: PLC0415

    core = ov.Core()
    if inference_precision is not None:
        core.set_property("CPU", {"INFERENCE_PRECISION_HINT": inference_precision})

    async def compile_and_evaluate() -> tuple[OpenVinoDetector, EvalResult]:
        # Compilation blocks for seconds; keep it off the loop like the service does.
        detector = await asyncio.to_thread(
            OpenVinoDetector, model_xml=model_xml, device=device, batch_size=batch_size, core=core
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
    _write_report(out, result=result, info=detector.info)
    return 0
