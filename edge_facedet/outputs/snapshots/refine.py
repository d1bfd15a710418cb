"""The refining step of a main-stream snapshot: the detector again, on the face's region.

The box mapped from the substream lands near the face in the main picture, not on it: the
two streams' moments may differ by a frame and the substream's box is coarse. Running the
detector on a generous square around the mapped box (REGION_SCALE), never smaller than the
network's input so the main stream's pixels are never blown up, finds the face at the main
stream's resolution; the face that overlaps the mapped box most is the snapshot's face.
The detector's box for one face moves by a few pixels with where the face falls on the
network's anchor grid, so the region is looked at three times, moved by a third and two
thirds of a grid step (REFINE_SHIFTS), and the face's boxes are averaged: steadier than any
one of them (docs/benchmarks.md, "Snapshots from the main stream").

The worker thread runs its own small synchronous model (`SyncFaceDetector`): one infer
request on one CPU thread, compiled once at start. The service's `OpenVinoDetector` is an
async batching queue owned by the event loop; submitting to it from the worker would mean a
round trip through the loop for each snapshot and a place in the detectors' batches,
competing with the cameras, while a one-thread request has a bounded, separate cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

__all__ = [
    "REFINE_SHIFTS",
    "REGION_SCALE",
    "FaceFinder",
    "Refined",
    "SyncFaceDetector",
    "iou",
    "mean_of_agreeing",
    "refine_box",
    "region_around",
    "shifted_region",
]

REGION_SCALE = 4.0
"""The square searched is this many times the mapped box's longer side, and at least the
network's input side: a small region blown up to the input shows a blurred face that the
detector boxes loosely (head and hair), while the main stream's own pixels at 1:1 or
scaled down show it as sharp as the camera sent it; and a face filling much of the input
is boxed more loosely than at the sizes the detector sees in whole frames."""
MIN_OVERLAP = 0.3
"""A face found in the region replaces the mapped box only if it overlaps it this much
(IoU); otherwise it is another face and the mapped box is kept."""
MIN_CONFIDENCE = 0.5
REFINE_SHIFTS: tuple[float, ...] = (0.0, 16 / 3, 32 / 3)
"""Where the region is moved (right and down, in network-input pixels) for each look: a
third and two thirds of the 16-px step of the finest anchor grid. Three inferences of one
thread per snapshot, on the worker's low-priority thread."""
AGREE_IOU = 0.5
"""A shifted look's face is averaged in only if it overlaps the first look's this much."""

PixelBox = tuple[float, float, float, float]


class FaceFinder(Protocol):
    """Faces in one image at the network's input size: (N, 5) confidence, box normalised."""

    @property
    def input_size(self) -> tuple[int, int]: ...

    def find(self, image: NDArray[np.uint8]) -> NDArray[np.float32]: ...


class SyncFaceDetector:
    """face-detection-0204 compiled for one synchronous request on one CPU thread."""

    def __init__(self, *, model_xml: Path, cache_dir: Path | None = None) -> None:
        import openvino as ov  # noqa: PLC0415 - only the service pays OpenVINO's import

        from edge_facedet.inference.compilation import (  # noqa: PLC0415
            CompileOptions,
            compile_detector_model,
        )
        from edge_facedet.inference.model import PerformanceHint  # noqa: PLC0415

        options = CompileOptions(
            device="CPU",
            performance_hint=PerformanceHint.LATENCY,
            infer_requests=1,
            inference_threads=1,
            cache_dir=cache_dir,
        )
        model = compile_detector_model(model_xml=model_xml, options=options, core=ov.Core())
        self._input_size = model.input_size
        self._request = model.compiled.create_infer_request()

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    def find(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        from edge_facedet.inference.postprocess import split_batch  # noqa: PLC0415

        self._request.infer({0: image[np.newaxis]})
        raw = np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        return split_batch(raw, batch=1)[0]


@dataclass(frozen=True, slots=True)
class Refined:
    box: PixelBox
    """The face in the main picture's pixels."""
    refined: bool
    """False: no face in the region overlapped the mapped box; `box` is the mapped one."""


def iou(a: PixelBox, b: PixelBox) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def region_around(
    box: PixelBox, *, width: int, height: int, min_side: float = 0.0
) -> tuple[int, int, int, int]:
    """A square of REGION_SCALE x the box's longer side (at least `min_side`) around its
    centre, kept inside the picture (shifted, then cut only if the picture is smaller)."""
    wanted = max(REGION_SCALE * max(box[2] - box[0], box[3] - box[1]), min_side)
    side = min(wanted, width, height)
    side = max(side, 1.0)
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    left = min(max(centre_x - side / 2, 0.0), width - side)
    top = min(max(centre_y - side / 2, 0.0), height - side)
    return (
        math.floor(left),
        math.floor(top),
        min(math.ceil(left + side), width),
        min(math.ceil(top + side), height),
    )


def refine_box(
    image: NDArray[np.uint8],
    *,
    mapped: PixelBox,
    finder: FaceFinder,
    shifts: tuple[float, ...] = REFINE_SHIFTS,
) -> Refined:
    """The face overlapping `mapped` (pixels of `image`), found at the region's resolution:
    the mean of its boxes over the region moved by each of `shifts` (network pixels)."""
    height, width = image.shape[:2]
    region = region_around(mapped, width=width, height=height, min_side=max(finder.input_size))
    looks = []
    for shift in shifts:
        moved = shifted_region(region, shift, input_size=finder.input_size, size=(height, width))
        looks.append(_look(image, region=moved, mapped=mapped, finder=finder))
    mean = mean_of_agreeing(looks)
    return Refined(box=mapped, refined=False) if mean is None else Refined(box=mean, refined=True)


def mean_of_agreeing(looks: list[PixelBox | None]) -> PixelBox | None:
    """The mean of the boxes found, each counted if it overlaps the first one found by at
    least AGREE_IOU (a look that caught a neighbour is left out); None when none was."""
    found: list[PixelBox] = []
    for box in looks:
        if box is not None and (not found or iou(box, found[0]) >= AGREE_IOU):
            found.append(box)
    if not found:
        return None
    left, top, right, bottom = (sum(side) / len(found) for side in zip(*found, strict=True))
    return left, top, right, bottom


def shifted_region(
    region: tuple[int, int, int, int],
    shift: float,
    *,
    input_size: tuple[int, int],
    size: tuple[int, int],
) -> tuple[int, int, int, int]:
    """`region` moved by `shift` network pixels (`input_size`) in `image` pixels, right and
    down where the picture (`size`, height and width) leaves room, else left and up, else
    not at all along that side."""
    if shift == 0:
        return region
    left, top, right, bottom = region
    height, width = size
    by_x = round(shift * (right - left) / input_size[0])
    by_y = round(shift * (bottom - top) / input_size[1])
    by_x = by_x if right + by_x <= width else -by_x if left >= by_x else 0
    by_y = by_y if bottom + by_y <= height else -by_y if top >= by_y else 0
    return left + by_x, top + by_y, right + by_x, bottom + by_y


def _look(
    image: NDArray[np.uint8],
    *,
    region: tuple[int, int, int, int],
    mapped: PixelBox,
    finder: FaceFinder,
) -> PixelBox | None:
    """The face in `region` that overlaps `mapped` most (at least MIN_OVERLAP), or None."""
    left, top, right, bottom = region
    region_pixels = image[top:bottom, left:right]
    network = cv2.resize(region_pixels, finder.input_size, interpolation=cv2.INTER_AREA)
    rows = finder.find(np.ascontiguousarray(network, dtype=np.uint8))
    best: PixelBox | None = None
    best_overlap = MIN_OVERLAP
    scale = (right - left, bottom - top)
    for confidence, x_min, y_min, x_max, y_max in rows.tolist():
        if confidence < MIN_CONFIDENCE:
            continue
        candidate = (
            left + min(max(x_min, 0.0), 1.0) * scale[0],
            top + min(max(y_min, 0.0), 1.0) * scale[1],
            left + min(max(x_max, 0.0), 1.0) * scale[0],
            top + min(max(y_max, 0.0), 1.0) * scale[1],
        )
        overlap = iou(candidate, mapped)
        if overlap >= best_overlap:
            best, best_overlap = candidate, overlap
    return best
