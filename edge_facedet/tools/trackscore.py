"""Tracking quality on generated ground truth: `python -m edge_facedet.tools.trackscore --out DIR`.

Runs the service's detector (`OpenVinoDetector`, `to_detections`) and `FaceTracker` over the
sequences of `edge_facedet.tools.tracksynth` at several detection rates, and scores the
confirmed tracks with the MOT metrics (`motmetrics`: MOTA, IDF1, id switches, precision,
recall). This module is the command and the detector it drives; the runs per rate are in
`trackscore_runs`, the scoring in `trackscore_metrics`, the report in `trackscore_report`.

Needs the test extra (motmetrics, pandas): this is an offline tool, not part of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.model import Precision, default_model_root, model_xml_path
from edge_facedet.inference.postprocess import to_detections

# Re-exported: this module is the one entry point to the scoring.
from edge_facedet.tools.trackscore_metrics import (
    Hypothesis,
    TrackScore,
    accumulate,
    iou_distances,
    score,
    without_dont_care,
)
from edge_facedet.tools.trackscore_report import (
    contact_sheet,
    markdown_table,
    report_json,
    showcase_tile,
)
from edge_facedet.tools.trackscore_runs import (
    RATES,
    SOURCE_FPS,
    ObservedFrame,
    SequenceRun,
    observe,
    run_sequences,
    run_tracker,
    scores_by_rate,
    stride_for,
)
from edge_facedet.tools.tracksynth import (
    SyntheticSequence,
    default_media_root,
    harvest_sprites,
    load_background,
    standard_scenarios,
)
from edge_facedet.tracking.tracker import TrackerSettings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from numpy.typing import NDArray

    from edge_facedet.frames import Detections

__all__ = [
    "RATES",
    "BlockingDetector",
    "Hypothesis",
    "ObservedFrame",
    "SequenceRun",
    "TrackScore",
    "accumulate",
    "iou_distances",
    "main",
    "observe",
    "run_sequences",
    "run_tracker",
    "score",
    "scores_by_rate",
    "stride_for",
    "without_dont_care",
]


class BlockingDetector:
    """`OpenVinoDetector` one frame at a time, for plain sequential code (a `FaceFinder`).

    The detector's API is asynchronous; an offline tool has no other work to overlap with a
    frame's inference, so each call runs the request to completion on a private event loop.
    Detections at or above `confidence_threshold` are kept (the tracker's low threshold, so
    its second stage sees what the service would give it).
    """

    def __init__(
        self, *, model_xml: Path, confidence_threshold: float, device: str = "AUTO"
    ) -> None:
        self._detector = OpenVinoDetector(
            model_xml=model_xml, device=device, performance_hint="LATENCY"
        )
        self._loop = asyncio.new_event_loop()
        self._threshold = confidence_threshold

    def __call__(self, image: NDArray[np.uint8], /) -> Detections:
        height, width = image.shape[:2]
        resized = np.asarray(
            cv2.resize(image, self._detector.input_size, interpolation=cv2.INTER_LINEAR), np.uint8
        )
        result = self._loop.run_until_complete(self._detector.detect([resized]))
        return to_detections(
            result.rows[0],
            frame_width=width,
            frame_height=height,
            confidence_threshold=self._threshold,
        )

    def close(self) -> None:
        self._detector.wait_idle()
        self._loop.close()

    def __enter__(self) -> BlockingDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- the command ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge_facedet.tools.trackscore",
        description="Score the face tracker (MOTA, IDF1, id switches) on generated sequences.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the report files")
    parser.add_argument("--model", type=Path, help="model .xml (default: the installed one)")
    parser.add_argument(
        "--models-dir", type=Path, help="models root (default: $EDGE_FACEDET_MODELS)"
    )
    parser.add_argument(
        "--precision", choices=[p.value for p in Precision], default=Precision.FP16_INT8.value
    )
    parser.add_argument("--media", type=Path, help="shared media folder (default: ../shared/media)")
    parser.add_argument("--device", default="AUTO", help="OpenVINO device (default AUTO)")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="the camera's confidence_threshold: detections from it up start tracks",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model_xml = args.model or model_xml_path(
        args.models_dir or default_model_root(), Precision(args.precision)
    )
    if not model_xml.is_file():
        print(f"trackscore: model {model_xml} not found", file=sys.stderr)  # noqa: T201
        return 2
    media: Path = args.media or default_media_root()
    tracking = TrackingConfig()
    settings = TrackerSettings(
        high_confidence=args.confidence_threshold,
        low_confidence=tracking.low_confidence,
        match_iou=tracking.match_iou,
        min_hits=tracking.min_hits,
        max_age_s=tracking.max_age_s,
    )
    with BlockingDetector(
        model_xml=model_xml, confidence_threshold=settings.low_confidence, device=args.device
    ) as detector:
        sprites = harvest_sprites(find_faces=detector, media=media)
        background = load_background(media=media)
        height, width = background.shape[:2]
        sequences = [
            SyntheticSequence(scenario=s, sprites=sprites, background=background, fps=SOURCE_FPS)
            for s in standard_scenarios(width=width, height=height)
        ]
        runs = run_sequences(sequences, find_faces=detector, settings=settings)
    scores = scores_by_rate(runs)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report = report_json(runs, scores, settings=settings)
    report["sprites"] = [sprite.source for sprite in sprites]
    (out / "trackscore.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(runs, scores)
    (out / "trackscore.md").write_text(table)
    cv2.imwrite(str(out / "trackscore.png"), contact_sheet([showcase_tile(run) for run in runs]))
    print(table)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
