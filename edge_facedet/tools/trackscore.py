"""Tracking quality on generated ground truth: `python -m edge_facedet.tools.trackscore --out DIR`.

Runs the service's detector (`OpenVinoDetector`, `to_detections`) and `FaceTracker` over the
sequences of `edge_facedet.tools.tracksynth` at several detection rates, and scores the
confirmed tracks with the MOT metrics (`motmetrics`: MOTA, IDF1, id switches, precision,
recall). The sequences are rendered at 10 frames/s; a lower rate keeps every n-th frame with
its own time, as a camera's detect grid does. Each frame is detected once and the tracker runs
per rate on the kept frames' detections, since the detector's output for a frame does not
depend on the rate.

motmetrics 1.4's own IoU helper calls `np.asfarray`, which numpy 2 removed, so the distance
matrix is built here (`iou_distances`) and only its accumulator and metrics are used.

Needs the test extra (motmetrics, pandas): this is an offline tool, not part of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import colorsys
import dataclasses
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import motmetrics as mm  # type: ignore[import-untyped]
import numpy as np

# scipy ships no type information unless scipy-stubs is installed; either way passes.
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped, unused-ignore]

from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.model import Precision, default_model_root, model_xml_path
from edge_facedet.inference.postprocess import to_detections
from edge_facedet.tools.tracksynth import (
    SyntheticSequence,
    default_media_root,
    harvest_sprites,
    load_background,
    standard_scenarios,
)
from edge_facedet.tracking.tracker import MIN_AGE_PERIODS, FaceTracker, TrackerSettings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from numpy.typing import NDArray

    from edge_facedet.frames import Detections
    from edge_facedet.tools.tracksynth import Box, FaceFinder, GroundTruthFace

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
    "stride_for",
    "without_dont_care",
]

SOURCE_FPS = 10.0
RATES = (2.0, 5.0, 10.0)
"""Detection rates scored (frames/s)."""
SHOWCASE_RATE = 5.0
"""The rate whose tracks the contact sheet shows."""
MAX_IOU_DISTANCE = 0.5
"""A hypothesis matches a ground-truth face only with IoU >= 0.5 (the MOT challenge's rule)."""
METRICS = (
    "mota",
    "idf1",
    "num_switches",
    "precision",
    "recall",
    "num_frames",
    "num_objects",
    "num_false_positives",
    "num_misses",
)
OVERALL = "OVERALL"


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


# --- detection and tracking -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedFrame:
    """One frame's ground truth and detections (the picture is not kept)."""

    index: int
    t: float
    truth: tuple[GroundTruthFace, ...]
    boxes: NDArray[np.float32]
    """(N, 4) pixels, x_min, y_min, x_max, y_max."""
    confidences: NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hypothesis:
    """A confirmed track's box in one frame."""

    track_id: int
    box: Box


def stride_for(rate: float, *, source_fps: float = SOURCE_FPS) -> int:
    """Every how many source frames a detection rate keeps one; ValueError unless exact."""
    stride = round(source_fps / rate)
    if stride < 1 or not math.isclose(source_fps / stride, rate):
        raise ValueError(f"{rate:g}/s is not {source_fps:g}/s divided by a whole number")
    return stride


def observe(
    sequence: SyntheticSequence, *, find_faces: FaceFinder, stride: int = 1
) -> list[ObservedFrame]:
    """Render every `stride`-th frame of `sequence` and detect its faces."""
    observed = []
    for index in range(0, sequence.frame_count, stride):
        frame = sequence.frame(index)
        faces = find_faces(frame.image)
        observed.append(
            ObservedFrame(
                index=index,
                t=frame.t,
                truth=frame.faces,
                boxes=faces.boxes_px,
                confidences=faces.confidences,
            )
        )
    return observed


def _as_box(row: NDArray[np.float32]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in row)
    return (x1, y1, x2, y2)


def run_tracker(
    frames: Sequence[ObservedFrame], *, settings: TrackerSettings
) -> list[tuple[Hypothesis, ...]]:
    """A fresh tracker over `frames` in order: per frame, its confirmed tracks' boxes.

    Tentative tracks are not hypotheses: the service publishes nothing for them either."""
    tracker = FaceTracker(settings=settings)
    hypotheses = []
    for frame in frames:
        step = tracker.update(boxes=frame.boxes, confidences=frame.confidences, t=frame.t)
        hypotheses.append(
            tuple(
                Hypothesis(track_id=face.track_id, box=_as_box(frame.boxes[face.detection_index]))
                for face in step.faces
                if face.confirmed
            )
        )
    return hypotheses


# --- scoring --------------------------------------------------------------------------------


def iou_distances(
    truth: NDArray[np.float64], hypotheses: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(N, M) 1 - IoU of xyxy boxes; NaN (no match allowed) above `MAX_IOU_DISTANCE`."""
    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    hypotheses = np.asarray(hypotheses, np.float64).reshape(-1, 4)
    t, h = truth[:, None, :], hypotheses[None, :, :]
    inter_w = np.clip(np.minimum(t[..., 2], h[..., 2]) - np.maximum(t[..., 0], h[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(t[..., 3], h[..., 3]) - np.maximum(t[..., 1], h[..., 1]), 0, None)
    inter = inter_w * inter_h
    area_t = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    area_h = (h[..., 2] - h[..., 0]) * (h[..., 3] - h[..., 1])
    union = area_t + area_h - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    distance: NDArray[np.float64] = 1.0 - iou
    distance[distance > MAX_IOU_DISTANCE] = np.nan
    return distance


def _boxes(items: Sequence[GroundTruthFace] | Sequence[Hypothesis]) -> NDArray[np.float64]:
    return np.array([item.box for item in items], np.float64).reshape(-1, 4)


def without_dont_care(
    faces: Sequence[GroundTruthFace], hypotheses: Sequence[Hypothesis]
) -> list[Hypothesis]:
    """The hypotheses left once those taken by a "don't care" face are removed.

    MOT's distractor rule, as py-motmetrics applies it to MOT16: every face, counted or not,
    is assigned to the hypotheses (Hungarian on IoU distance, matches up to
    `MAX_IOU_DISTANCE`); a hypothesis assigned to a face too hidden to count is neither a hit
    nor a false positive, so it is dropped."""
    if not hypotheses or all(face.counted for face in faces):
        return list(hypotheses)
    distances = iou_distances(_boxes(faces), _boxes(hypotheses))
    rows, cols = linear_sum_assignment(np.where(np.isnan(distances), 1e6, distances))
    dropped = {
        int(c)
        for r, c in zip(rows, cols, strict=True)
        if not np.isnan(distances[r, c]) and not faces[r].counted
    }
    return [hyp for i, hyp in enumerate(hypotheses) if i not in dropped]


def accumulate(
    truth: Sequence[Sequence[GroundTruthFace]], hypotheses: Sequence[Sequence[Hypothesis]]
) -> Any:
    """A `motmetrics.MOTAccumulator` (untyped, hence Any) over frames: ground truth and
    hypotheses, frame by frame; faces too hidden to count are "don't care"."""
    if len(truth) != len(hypotheses):
        raise ValueError(f"{len(truth)} frames of truth but {len(hypotheses)} of hypotheses")
    acc = mm.MOTAccumulator(auto_id=True)
    for faces, hyps in zip(truth, hypotheses, strict=True):
        kept = without_dont_care(faces, hyps)
        counted = [face for face in faces if face.counted]
        distances = iou_distances(_boxes(counted), _boxes(kept))
        acc.update([face.gt_id for face in counted], [hyp.track_id for hyp in kept], distances)
    return acc


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackScore:
    """The MOT figures of one sequence at one rate (or of several together)."""

    mota: float
    idf1: float
    id_switches: int
    precision: float
    recall: float
    frames: int
    gt_boxes: int
    false_positives: int
    misses: int


def _number(value: Any) -> float:
    """A pandas scalar as a float; NaN stays NaN (no hypotheses: precision is 0/0)."""
    number = float(value)
    return number if math.isfinite(number) else math.nan


def score(accumulators: Mapping[str, Any]) -> dict[str, TrackScore]:
    """Each accumulator's figures, and `OVERALL` for all of them pooled."""
    summary = mm.metrics.create().compute_many(
        list(accumulators.values()),
        metrics=list(METRICS),
        names=list(accumulators),
        generate_overall=True,
    )
    scores = {}
    for name in [*accumulators, OVERALL]:
        row = summary.loc[name]
        scores[name] = TrackScore(
            mota=_number(row["mota"]),
            idf1=_number(row["idf1"]),
            id_switches=int(row["num_switches"]),
            precision=_number(row["precision"]),
            recall=_number(row["recall"]),
            frames=int(row["num_frames"]),
            gt_boxes=int(row["num_objects"]),
            false_positives=int(row["num_false_positives"]),
            misses=int(row["num_misses"]),
        )
    return scores


# --- the whole evaluation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceRun:
    """One sequence detected once, tracked at each rate."""

    sequence: SyntheticSequence
    frames: tuple[ObservedFrame, ...]
    hypotheses: dict[float, list[tuple[Hypothesis, ...]]]
    """Per rate, per kept frame (the frames whose index is a multiple of its stride)."""

    def kept(self, rate: float) -> list[ObservedFrame]:
        stride = stride_for(rate, source_fps=self.sequence.fps)
        return [frame for frame in self.frames if frame.index % stride == 0]


def run_sequences(
    sequences: Sequence[SyntheticSequence],
    *,
    find_faces: FaceFinder,
    settings: TrackerSettings,
    rates: Sequence[float] = RATES,
) -> list[SequenceRun]:
    """Detect each sequence's frames once (only those some rate keeps), track at each rate."""
    runs = []
    for sequence in sequences:
        strides = [stride_for(rate, source_fps=sequence.fps) for rate in rates]
        frames = tuple(observe(sequence, find_faces=find_faces, stride=math.gcd(*strides)))
        run = SequenceRun(sequence=sequence, frames=frames, hypotheses={})
        for rate in rates:
            # As the service does (TrackerSettings.from_config): at least MIN_AGE_PERIODS.
            at_rate = dataclasses.replace(
                settings, max_age_s=max(settings.max_age_s, MIN_AGE_PERIODS / rate)
            )
            run.hypotheses[rate] = run_tracker(run.kept(rate), settings=at_rate)
        runs.append(run)
    return runs


def scores_by_rate(
    runs: Sequence[SequenceRun], *, rates: Sequence[float] = RATES
) -> dict[float, dict[str, TrackScore]]:
    """Per rate: each sequence's figures and `OVERALL`."""
    result = {}
    for rate in rates:
        accumulators = {
            run.sequence.name: accumulate(
                [frame.truth for frame in run.kept(rate)], run.hypotheses[rate]
            )
            for run in runs
        }
        result[rate] = score(accumulators)
    return result


# --- the report -----------------------------------------------------------------------------


def _rate_label(rate: float) -> str:
    return f"{rate:g}/s"


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def markdown_table(
    runs: Sequence[SequenceRun], scores: Mapping[float, Mapping[str, TrackScore]]
) -> str:
    columns = (
        *("sequence", "rate", "MOTA", "IDF1", "ID switches"),
        *("precision", "recall", "GT boxes", "FP", "misses"),
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name in [*(run.sequence.name for run in runs), OVERALL]:
        for rate, by_name in scores.items():
            s = by_name[name]
            lines.append(
                f"| {name} | {_rate_label(rate)} | {_fmt(s.mota)} | {_fmt(s.idf1)} | "
                f"{s.id_switches} | {_fmt(s.precision)} | {_fmt(s.recall)} | {s.gt_boxes} | "
                f"{s.false_positives} | {s.misses} |"
            )
    notes = [
        f"- {run.sequence.name}: {run.sequence.scenario.description}."
        + (f" {run.sequence.scenario.note}" if run.sequence.scenario.note else "")
        for run in runs
    ]
    return "\n".join([*lines, "", *notes, ""])


def _json_ready(score_: TrackScore) -> dict[str, float | int | None]:
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in asdict(score_).items()
    }


def report_json(
    runs: Sequence[SequenceRun],
    scores: Mapping[float, Mapping[str, TrackScore]],
    *,
    settings: TrackerSettings,
) -> dict[str, Any]:
    return {
        "tracker_settings": asdict(settings),
        "source_fps": SOURCE_FPS,
        "sequences": {
            run.sequence.name: {
                "description": run.sequence.scenario.description,
                "note": run.sequence.scenario.note,
                "duration_s": run.sequence.scenario.duration_s,
                "scores": {
                    _rate_label(rate): _json_ready(by_name[run.sequence.name])
                    for rate, by_name in scores.items()
                },
            }
            for run in runs
        },
        "overall": {_rate_label(rate): _json_ready(by[OVERALL]) for rate, by in scores.items()},
    }


def _id_colour(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour per id (golden-ratio hues; never pure green)."""
    hue = (track_id * 0.618034 + 0.05) % 1.0
    if 0.25 < hue < 0.42:  # green is the ground truth's
        hue += 0.2
    r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
    return (round(b * 255), round(g * 255), round(r * 255))


def _int_box(box: Box) -> tuple[tuple[int, int], tuple[int, int]]:
    return (round(box[0]), round(box[1])), (round(box[2]), round(box[3]))


def showcase_tile(run: SequenceRun, *, rate: float = SHOWCASE_RATE) -> NDArray[np.uint8]:
    """The scenario's key frame: ground truth in green, the tracks at `rate` with their ids."""
    kept = run.kept(rate)
    key = run.sequence.scenario.key_time
    position = min(range(len(kept)), key=lambda i: abs(kept[i].t - key))
    frame = run.sequence.frame(kept[position].index)
    image = frame.image.copy()
    for face in frame.faces:  # a "don't care" face (mostly hidden) gets a thin box
        cv2.rectangle(image, *_int_box(face.box), (0, 200, 0), 2 if face.counted else 1)
    for hyp in run.hypotheses[rate][position]:
        top_left, bottom_right = _int_box(hyp.box)
        colour = _id_colour(hyp.track_id)
        cv2.rectangle(image, top_left, bottom_right, colour, 2)
        label_at = (top_left[0], max(top_left[1] - 6, 14))
        cv2.putText(image, f"id {hyp.track_id}", label_at, cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
    caption = f"{run.sequence.name}  t={frame.t:.1f}s  tracker at {_rate_label(rate)}"
    cv2.rectangle(image, (0, 0), (image.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(image, caption, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return image


def contact_sheet(tiles: Sequence[NDArray[np.uint8]], *, columns: int = 3) -> NDArray[np.uint8]:
    height, width = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * height, columns * width, 3), 40, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * height : (r + 1) * height, c * width : (c + 1) * width] = tile
    return sheet


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
