"""The `edge-facedet detect PATH...` command: faces in image files, folders and video files.

Owns decoding and resizing the media files (`edge_facedet.tools.inputs` expands the PATHs)
in worker threads pipelined with batched inference on an `OpenVinoDetector`, and the
JSON-lines output (one line per frame). The annotated copies written with `--annotate` are
`edge_facedet.tools.annotate`'s. Every image's header is read before it is decoded, so an
image declaring more pixels than the cap is reported and skipped without being allocated
(`edge_facedet.tools.imageheader`).

Exit status: 0 when every file was processed; 1 when any file could not be (missing,
unreadable, over the pixel cap, its copy not written: each named in one line on stderr, the
others still processed); 2 for usage (no media file found, an `--annotate` folder that cannot
be created or whose copies would overwrite an input, a model or device that cannot be loaded),
before any file is processed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
import numpy as np

from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.postprocess import to_detections
from edge_facedet.tools.annotate import Annotator, out_dir_problem
from edge_facedet.tools.imageheader import DEFAULT_MAX_PIXELS, pixel_cap_problem
from edge_facedet.tools.inputs import MediaFile, expand_paths, media_kind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from edge_facedet.frames import Detections
    from edge_facedet.inference.detector import BatchResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_NO_INPUT = EXIT_USAGE


class DetectUsageError(Exception):
    """The run cannot start: one line naming the argument or path."""


@dataclass(frozen=True, slots=True)
class _Decoded:
    """One frame: the original (for annotation) and its network-sized copy."""

    media: MediaFile
    index: int
    image: NDArray[np.uint8]
    resized: NDArray[np.uint8]
    last: bool
    """The last frame this file will produce, so its video writer can be closed."""
    fps: float = 0.0
    """Videos: the rate of the kept frames, for the annotated copy."""


@dataclass(slots=True)
class _Run:
    """State shared by the pipeline stages of one `run_detect` call."""

    out: TextIO
    err: TextIO
    failed: set[Path] = field(default_factory=set)

    def fail(self, path: Path, message: str) -> None:
        self.failed.add(path)
        self.err.write(f"edge-facedet detect: {path}: {message}\n")
        self.err.flush()


class _VideoReader:
    """Sequential decoding of one video, keeping every `every_nth` frame; runs in a thread."""

    def __init__(self, path: Path, *, every_nth: int) -> None:
        self._capture = cv2.VideoCapture(str(path))
        self._every_nth = every_nth
        self._index = -1
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) if self.opened else 0.0
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)) if self.opened else 0
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) if self.opened else 0

    @property
    def opened(self) -> bool:
        return bool(self._capture.isOpened())

    def next(self) -> tuple[int, NDArray[np.uint8]] | None:
        """The next kept frame and its index in the file, or None at the end."""
        while True:
            self._index += 1
            if self._index % self._every_nth:
                # grab() skips the colour conversion and copy of frames we do not keep.
                if not self._capture.grab():
                    return None
                continue
            ok, frame = self._capture.read()
            if not ok or frame is None:
                return None
            return self._index, np.asarray(frame, np.uint8)

    def close(self) -> None:
        self._capture.release()


def _resize(image: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    if image.shape[1::-1] == size:
        return image
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), np.uint8)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_image(
    path: Path, size: tuple[int, int], *, max_pixels: int
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]] | str | None:
    """(image, resized); or why the file is skipped; or None when OpenCV cannot read it as
    an image. One worker-thread call for all."""
    problem = pixel_cap_problem(path, max_pixels=max_pixels)
    if problem is not None:
        return problem
    try:
        # IMREAD_COLOR gives 3-channel BGR for grey, palette and alpha images alike.
        decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" in str(exc):  # a format whose header only OpenCV reads
            return f"over the {max_pixels / 1e6:g} MP cap (--max-megapixels); not decoded"
        return f"cannot decode the image: {_first_line(exc)}"  # e.g. out of memory
    if decoded is None:
        return None
    image = np.asarray(decoded, np.uint8)
    return image, _resize(image, size)


async def _produce(
    *,
    media: Sequence[MediaFile],
    size: tuple[int, int],
    every_nth: int,
    max_pixels: int,
    frames: asyncio.Queue[_Decoded | None],
    run: _Run,
) -> None:
    """Decode and resize in worker threads, so that runs on the second core while the
    detector's requests run on OpenVINO's threads."""
    for item in media:
        if not item.is_video:
            read = await asyncio.to_thread(_read_image, item.path, size, max_pixels=max_pixels)
            if isinstance(read, str):
                run.fail(item.path, read)
                continue
            if read is not None:
                await frames.put(_Decoded(item, 0, *read, last=True))
                continue
            if media_kind(item.path) is not None:  # an image by name that OpenCV cannot read
                run.fail(item.path, "cannot read the image")
                continue
            video = MediaFile(
                path=item.path,
                is_video=True,
                annotated_name=item.annotated_name.with_suffix(".mp4"),
            )
        else:
            video = item
        await _produce_video(
            item=video,
            size=size,
            every_nth=every_nth,
            max_pixels=max_pixels,
            frames=frames,
            run=run,
        )
    # Only a normal end is signalled: on an error, _detect_files cancels every stage, and
    # a put() into a full queue here would then never return.
    await frames.put(None)


async def _produce_video(
    *,
    item: MediaFile,
    size: tuple[int, int],
    every_nth: int,
    max_pixels: int,
    frames: asyncio.Queue[_Decoded | None],
    run: _Run,
) -> None:
    # An animated GIF is a video here; its header declares its size like an image's.
    problem = await asyncio.to_thread(pixel_cap_problem, item.path, max_pixels=max_pixels)
    if problem is not None:
        run.fail(item.path, problem)
        return
    reader = await asyncio.to_thread(_VideoReader, item.path, every_nth=every_nth)
    try:
        if not reader.opened:
            run.fail(item.path, "cannot open it as an image or a video")
            return
        if reader.width * reader.height > max_pixels:
            run.fail(
                item.path,
                f"frames of {reader.width}x{reader.height} pixels are over the "
                f"{max_pixels / 1e6:g} MP cap (--max-megapixels)",
            )
            return

        def next_frame() -> tuple[int, NDArray[np.uint8], NDArray[np.uint8]] | None:
            got = reader.next()
            return None if got is None else (got[0], got[1], _resize(got[1], size))

        # Keeping every Nth frame, the annotated copy plays at 1/N of the rate, in real time.
        fps = (reader.fps if reader.fps > 0 else 25.0) / every_nth
        # One frame of look-ahead tells the consumer which frame is the file's last.
        pending = await asyncio.to_thread(next_frame)
        if pending is None:
            run.fail(item.path, "no frame could be decoded")
            return
        while pending is not None:
            following = await asyncio.to_thread(next_frame)
            index, image, resized = pending
            decoded = _Decoded(item, index, image, resized, last=following is None, fps=fps)
            await frames.put(decoded)
            pending = following
    finally:
        await asyncio.to_thread(reader.close)


async def _batch(
    *,
    detector: OpenVinoDetector,
    frames: asyncio.Queue[_Decoded | None],
    batches: asyncio.Queue[tuple[list[_Decoded], asyncio.Task[BatchResult]] | None],
) -> None:
    """Group frames into full batches (a partial one only at the end) and start them; the
    bounded `batches` queue keeps about `max_inflight` requests busy without running ahead."""
    batch: list[_Decoded] = []
    while (decoded := await frames.get()) is not None:
        batch.append(decoded)
        if len(batch) == detector.batch_size:
            task = asyncio.create_task(detector.detect([d.resized for d in batch]))
            await batches.put((batch, task))
            batch = []
    if batch:
        task = asyncio.create_task(detector.detect([d.resized for d in batch]))
        await batches.put((batch, task))
    await batches.put(None)  # as in _produce: only a normal end is signalled


def frame_record(
    *, decoded: _Decoded, rows: NDArray[np.float32], threshold: float, min_face_px: int
) -> tuple[dict[str, object], Detections]:
    """The JSON object for one frame (and its detections, for annotation)."""
    height, width = decoded.image.shape[:2]
    faces = to_detections(
        rows,
        frame_width=width,
        frame_height=height,
        confidence_threshold=threshold,
        min_face_px=min_face_px,
    )
    # float64 before rounding, so 12.3 prints as 12.3 rather than float32's 12.300000190734863.
    boxes = np.round(faces.boxes_px.astype(np.float64), 1).tolist()
    boxes_norm = np.round(faces.boxes_norm.astype(np.float64), 4).tolist()
    confidences = np.round(faces.confidences.astype(np.float64), 3).tolist()
    record: dict[str, object] = {
        "file": str(decoded.media.path),
        "frame": decoded.index,
        "width": width,
        "height": height,
        "faces": [
            {"box": box, "box_norm": norm, "confidence": conf}
            for box, norm, conf in zip(boxes, boxes_norm, confidences, strict=True)
        ],
    }
    return record, faces


async def _consume(
    *,
    batches: asyncio.Queue[tuple[list[_Decoded], asyncio.Task[BatchResult]] | None],
    threshold: float,
    min_face_px: int,
    annotator: Annotator | None,
    run: _Run,
) -> None:
    """Results in input order: JSON lines, then annotated copies (written in a thread)."""
    try:
        while (entry := await batches.get()) is not None:
            batch, task = entry
            result = await task
            lines = []
            for decoded, rows in zip(batch, result.rows, strict=True):
                record, faces = frame_record(
                    decoded=decoded, rows=rows, threshold=threshold, min_face_px=min_face_px
                )
                lines.append(json.dumps(record) + "\n")
                if annotator is not None and decoded.media.path not in run.failed:
                    problem = await asyncio.to_thread(annotator.add, decoded, faces)
                    if problem is not None:
                        run.fail(decoded.media.path, problem)
            run.out.write("".join(lines))
            run.out.flush()
    finally:
        if annotator is not None:
            await asyncio.to_thread(annotator.close)


@dataclass(frozen=True, slots=True)
class _Settings:
    """One `run_detect` call's options, as the pipeline stages need them."""

    model_xml: Path
    device: str
    batch_size: int
    confidence_threshold: float
    min_face_px: int
    annotate_dir: Path | None
    every_nth: int
    max_pixels: int


async def _load_detector(settings: _Settings) -> OpenVinoDetector:
    try:
        return await asyncio.to_thread(
            OpenVinoDetector,
            model_xml=settings.model_xml,
            device=settings.device,
            batch_size=settings.batch_size,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        # An absent device (GPU on a host without one) or a model of another shape: no
        # file can be processed, so it is a usage error, not a per-file one.
        raise DetectUsageError(
            f"--device {settings.device}: cannot load {settings.model_xml}: {_first_line(exc)}"
        ) from None


async def _detect_files(*, media: Sequence[MediaFile], settings: _Settings, run: _Run) -> None:
    detector = await _load_detector(settings)
    # A few decoded batches ahead of inference hide decoding jitter; more would only hold
    # full-size frames in memory.
    depth = detector.max_inflight * detector.batch_size * 2
    frames: asyncio.Queue[_Decoded | None] = asyncio.Queue(maxsize=depth)
    batches: asyncio.Queue[tuple[list[_Decoded], asyncio.Task[BatchResult]] | None]
    batches = asyncio.Queue(maxsize=detector.max_inflight)
    annotate_dir = settings.annotate_dir
    annotator = None if annotate_dir is None else Annotator(annotate_dir)
    stages = [
        asyncio.create_task(
            _produce(
                media=media,
                size=detector.input_size,
                every_nth=settings.every_nth,
                max_pixels=settings.max_pixels,
                frames=frames,
                run=run,
            )
        ),
        asyncio.create_task(_batch(detector=detector, frames=frames, batches=batches)),
        asyncio.create_task(
            _consume(
                batches=batches,
                threshold=settings.confidence_threshold,
                min_face_px=settings.min_face_px,
                annotator=annotator,
                run=run,
            )
        ),
    ]
    try:
        await asyncio.gather(*stages)
    finally:
        # A failed stage would leave the others waiting on a queue forever.
        for stage in stages:
            stage.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
        await asyncio.to_thread(detector.wait_idle)


def _prepare_annotate_dir(annotate_dir: Path, media: Sequence[MediaFile]) -> None:
    copies = []
    for item in media:
        copies.append(item.annotated_name)
        if not item.is_video:  # an image OpenCV cannot read is tried as a video: an .mp4 copy
            copies.append(item.annotated_name.with_suffix(".mp4"))
    problem = out_dir_problem(annotate_dir, inputs=[item.path for item in media], copies=copies)
    if problem is not None:
        raise DetectUsageError(f"--annotate {annotate_dir}: {problem}")


def run_detect(
    *,
    paths: Sequence[Path],
    model_xml: Path,
    device: str = "AUTO",
    batch_size: int = 1,
    confidence_threshold: float = 0.5,
    min_face_px: int = 0,
    annotate_dir: Path | None = None,
    every_nth: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    out: TextIO,
    err: TextIO,
) -> int:
    """Detect faces in `paths`, one JSON line per frame on `out`.

    Returns the exit status of the module docstring: 0; 1 when any file could not be read
    or its copy written (the others are still processed); 2 for a usage error (no image or
    video file found, an unusable `annotate_dir`, a device that cannot load the model).
    """
    if every_nth < 1:
        raise ValueError("every_nth must be >= 1")
    settings = _Settings(
        model_xml=model_xml,
        device=device,
        batch_size=batch_size,
        confidence_threshold=confidence_threshold,
        min_face_px=min_face_px,
        annotate_dir=annotate_dir,
        every_nth=every_nth,
        max_pixels=max_pixels,
    )
    run = _Run(out=out, err=err)
    media = expand_paths(paths=paths, report=run.fail)
    if not media:
        err.write("edge-facedet detect: no image or video file found\n")
        return EXIT_USAGE
    try:
        if annotate_dir is not None:
            _prepare_annotate_dir(annotate_dir, media)
        asyncio.run(_detect_files(media=media, settings=settings, run=run))
    except DetectUsageError as exc:
        err.write(f"edge-facedet detect: {exc}\n")
        return EXIT_USAGE
    return EXIT_FAILED if run.failed else EXIT_OK
