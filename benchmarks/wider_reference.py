"""Independent reference AP of face-detection-0204 on a WIDER FACE folder.

Owns a deliberately plain inference path to check the service's one against: `openvino.Core`
compiles the IR for CPU as it is (no PrePostProcessor, batch 1, f32 NCHW input), each image
is `cv2.resize`d to 448x448 and transposed in numpy, inference is synchronous, and the rows
of `detection_out` before the `image_id == -1` terminator are scaled to the original image.
Only the ground-truth parser (`edge_facedet.tools.evaluation`) and the AP protocol
(`edge_facedet.tools.average_precision`) are shared with `edge-facedet eval`, so a bug in the
detector's pre-processing, batching or output handling shows up as a difference between the
two figures. The dataset sits in `../shared/eval/wider-face-val-dev/` beside the checkout:

    .venv/bin/python benchmarks/wider_reference.py --precision FP16 \
        --images ../shared/eval/wider-face-val-dev/images \
        --gt ../shared/eval/wider-face-val-dev/wider_face_val_bbx_gt.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import openvino as ov

from edge_facedet.tools.average_precision import compute_average_precision
from edge_facedet.tools.evaluation import read_ground_truth

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge_facedet.tools.average_precision import AveragePrecision
    from edge_facedet.tools.evaluation import FaceAnnotations

REPO = Path(__file__).resolve().parents[1]
INPUT_SIZE = 448


def default_models_dir() -> Path:
    # Same place the tests and the set-up script install the model.
    return Path(os.environ.get("EDGE_FACEDET_MODELS", REPO / ".models"))


def model_xml_for(*, models_dir: Path, precision: str) -> Path:
    return models_dir / "intel" / "face-detection-0204" / precision / "face-detection-0204.xml"


def reference_detections(
    *, model_xml: Path, images_dir: Path, annotations: list[FaceAnnotations]
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
    """Per image: (D, 4) boxes in original-image pixels and (D,) confidences."""
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model_xml), "CPU")
    all_boxes: list[NDArray[np.float32]] = []
    all_scores: list[NDArray[np.float32]] = []
    for annotation in annotations:
        path = images_dir / annotation.image
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: cannot be decoded as an image")
        height, width = image.shape[:2]
        resized = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE))
        tensor = resized.transpose(2, 0, 1)[None].astype(np.float32)
        rows = compiled([tensor])[0].reshape(-1, 7)
        # DetectionOutput ends its rows with one whose image_id is -1; the rest are padding.
        terminators = np.flatnonzero(rows[:, 0] == -1)
        rows = rows[: terminators[0]] if terminators.size else rows
        scale = np.array([width, height, width, height], np.float32)
        all_boxes.append(rows[:, 3:7] * scale)
        all_scores.append(rows[:, 2].copy())
    return all_boxes, all_scores


def reference_average_precision(
    *, model_xml: Path, images_dir: Path, annotations: list[FaceAnnotations]
) -> AveragePrecision:
    boxes, scores = reference_detections(
        model_xml=model_xml, images_dir=images_dir, annotations=annotations
    )
    return compute_average_precision(
        gt_boxes=[annotation.boxes for annotation in annotations],
        pred_boxes=boxes,
        pred_scores=scores,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="FP16", help="model folder name (FP16, FP16-INT8)")
    parser.add_argument("--images", type=Path, required=True, help="WIDER images folder")
    parser.add_argument("--gt", type=Path, required=True, help="wider_face_val_bbx_gt.txt")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args(argv)
    model_xml = model_xml_for(models_dir=args.models_dir, precision=args.precision)
    for path in (model_xml, args.images, args.gt):
        if not path.exists():
            print(f"{path} does not exist", file=sys.stderr)
            return 2
    annotations = read_ground_truth(gt_file=args.gt, images_dir=args.images)[: args.limit]
    started = time.perf_counter()
    result = reference_average_precision(
        model_xml=model_xml, images_dir=args.images, annotations=annotations
    )
    seconds = time.perf_counter() - started
    print(
        f"reference AP {args.precision}: {result.ap * 100:.2f}% "
        f"(images {len(annotations)}, faces counted {result.gt_faces_counted}, "
        f"ignored {result.gt_faces_ignored}, TP {result.true_positives}, "
        f"FP {result.false_positives}, {len(annotations) / seconds:.1f} images/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
