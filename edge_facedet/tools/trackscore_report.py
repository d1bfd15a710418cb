"""The report of `edge_facedet.tools.trackscore`: a Markdown table, JSON and a contact sheet.

The contact sheet shows each scenario's key frame with the ground truth in green and the
tracks, in a colour per id, at `SHOWCASE_RATE`.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge_facedet.tools.trackscore_metrics import OVERALL
from edge_facedet.tools.trackscore_runs import SOURCE_FPS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import NDArray

    from edge_facedet.tools.trackscore_metrics import TrackScore
    from edge_facedet.tools.trackscore_runs import SequenceRun
    from edge_facedet.tools.tracksynth import Box
    from edge_facedet.tracking.tracker import TrackerSettings

__all__ = [
    "SHOWCASE_RATE",
    "contact_sheet",
    "markdown_table",
    "report_json",
    "showcase_tile",
]

SHOWCASE_RATE = 5.0
"""The rate whose tracks the contact sheet shows."""


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
