"""Contact sheets of every track's best face, from the real service on real clips.

`python -m benchmarks.contact_sheet --out DIR` runs `edge-facedet run` (as the benchmarks do:
`tests.support.service.ServiceProcess`, the local Mosquitto) once per clip and detect_fps,
with one file camera, `snapshots: {mode: crop}` and a `snapshot_dir`. It listens to the
camera's events, faces and state topics and, after the run, draws one PNG per run: every
track's final best face (the snapshot file of its event id), in start order, labelled from
the track's `end` event. Beside the PNGs: `figures.md` (tracks against the people counted by
eye in each clip, and the splits the events suggest) and `runs.json` (the events and faces
messages, the per-track figures and the service's counters, as evidence).

The camera plays the clip once, at its own frame rate (`realtime: true`, no loop), because
"tracks per person" is per pass of the clip: a looped file jumps back to its first frame,
where the faces sit near where they were at the last one, so a track may run on across
passes or be split at the jump, and neither is what a camera watching the scene would give.
`--fast` plays it with `realtime: false` instead (every due frame inferred): the tracker
then runs on the frames' arrival times, which follow how fast this host decodes and infers,
not the clip's own clock, so it is there to compare, not to count.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import BrokerAddress, delete_retained
from tests.support.net import free_port
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MODEL_ROOT
from tests.support.service import ServiceProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from numpy.typing import NDArray

BROKER = BrokerAddress("127.0.0.1", 1883)
READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 15.0
"""After the file ended: how long the `end` events of every track may take to arrive."""

Box = tuple[float, float, float, float]


# -- what is played ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Clip:
    """A clip, and the people in it as counted by eye (the reference for the track count)."""

    key: str
    """The camera id, and the clip's name in file names."""
    path: Path
    people: int
    how_counted: str


CLIPS: dict[str, Clip] = {
    clip.key: clip
    for clip in (
        Clip(
            key="event",
            path=FACE_VIDEO,
            people=5,
            how_counted="frames 0, 30, 60 and 89 viewed: the same five people throughout "
            "(woman in white, young man with the bottle, blonde woman, man in a turban and "
            "man with glasses, both half behind their phones); nobody enters or leaves",
        ),
        Clip(
            key="hikers",
            path=HIKERS_VIDEO,
            people=10,
            how_counted="one frame a second (0..17 s) viewed: four hikers in front (woman in "
            "a teal top, man in a blue jacket, a smaller one in a blue jacket and cap, man "
            "with a grey top and black pack), then a man in a red cap, a man in a blue hat "
            "walking alone, and a group of four (blue hat and beard, grey cap, white cap, "
            "maroon sweatshirt); each walks past the camera once and shows the face",
        ),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One run of the service: a clip at a detect_fps, played in real time or as fast as it
    can be, with tracking settings over the defaults."""

    clip: Clip
    detect_fps: float
    realtime: bool = True
    tracking: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        parts = [self.clip.key, f"fps{self.detect_fps:g}"]
        if not self.realtime:
            parts.append("fast")
        parts += [f"{key}{value}" for key, value in sorted(self.tracking.items())]
        return "-".join(parts)


def camera_config(spec: RunSpec) -> dict[str, Any]:
    """The camera's entry: the clip once, crops of the best faces, the tracking settings."""
    entry: dict[str, Any] = {
        "id": spec.clip.key,
        "url": str(spec.clip.path),
        "detect_fps": spec.detect_fps,
        "realtime": spec.realtime,
        "snapshots": {"mode": "crop"},
    }
    if spec.tracking:
        entry["tracking"] = dict(spec.tracking)
    return entry


def service_config(
    *, spec: RunSpec, prefix: str, snapshot_dir: Path, cache_dir: Path
) -> dict[str, Any]:
    return {
        "node_id": "sheet",
        "model": {
            "precision": "FP16-INT8",
            "dir": str(MODEL_ROOT),
            "device": "CPU",
            "cache_dir": str(cache_dir),
        },
        # QoS 1 for faces too: the timelines below need every processed frame.
        "mqtt": {
            "host": BROKER.host,
            "port": BROKER.port,
            "topic_prefix": prefix,
            "qos": {"faces": 1},
        },
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "snapshot_dir": {"path": str(snapshot_dir)},
        "defaults": {"publish": {"policy": "every_frame"}},
        "cameras": [camera_config(spec)],
    }


# -- what is heard -----------------------------------------------------------------------


class TopicLog:
    """Every camera message (events, faces, state) under one prefix, in arrival order."""

    KINDS = ("events", "faces", "state")

    def __init__(self, *, prefix: str) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._messages: list[tuple[str, dict[str, Any]]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"sheet-{uuid.uuid4().hex[:8]}",
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def __enter__(self) -> TopicLog:
        self._client.connect(BROKER.host, BROKER.port)
        self._client.loop_start()
        if not self._subscribed.wait(10.0):
            raise RuntimeError("MQTT subscriber did not subscribe within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(f"{self._prefix}/cameras/+/{kind}", 1) for kind in self.KINDS])

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        if not message.payload:
            return  # a retained state being deleted at the end of the run
        kind = str(message.topic).rsplit("/", 1)[-1]
        with self._lock:
            self._messages.append((kind, json.loads(message.payload)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for k, body in self._messages if k == kind]

    def wait(self, condition: Callable[[TopicLog], bool], *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.2)
        return condition(self)


def _finished(log: TopicLog) -> bool:
    """The file ended (the camera stopped) and every track that started has ended."""
    events = log.of("events")
    news = sum(1 for event in events if event["type"] == "new")
    ends = sum(1 for event in events if event["type"] == "end")
    stopped = any(state["state"] == "stopped" for state in log.of("state"))
    return stopped and ends >= news


# -- one run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    spec: RunSpec
    events: list[dict[str, Any]]
    faces: list[dict[str, Any]]
    snapshot_dir: Path
    """The camera's folder of snapshot files."""
    counters: dict[str, float]
    finished: bool
    """Whether the file ended and every track ended before the service was stopped."""
    log_tail: str


COUNTERS = {
    "frames_inferred": "edge_facedet_frames_inferred_total",
    "frames_dropped": "edge_facedet_frames_dropped_total",
    "faces_detected": "edge_facedet_faces_detected_total",
}
LABELLED_COUNTERS = {
    "events": ("edge_facedet_events_published_total", "type"),
    "snapshots": ("edge_facedet_snapshots_total", "result"),
}


def scrape_counters(service: ServiceProcess) -> dict[str, float]:
    """The service's frame, event and snapshot counters, summed over cameras."""
    samples = service.metrics()
    counters = {key: sum(samples.get(name, {}).values()) for key, name in COUNTERS.items()}
    for short, (name, label) in LABELLED_COUNTERS.items():
        for labels, value in samples.get(name, {}).items():
            kind = dict(labels).get(label, "")
            counters[f"{short}_{kind}"] = counters.get(f"{short}_{kind}", 0.0) + value
    return counters


def run_clip(*, spec: RunSpec, workdir: Path, cache_dir: Path) -> RunRecord:
    """Start the service on the clip, wait for the file to end and its tracks with it, stop."""
    prefix = f"sheet/{uuid.uuid4().hex[:8]}"
    snapshots = workdir / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    config = service_config(spec=spec, prefix=prefix, snapshot_dir=snapshots, cache_dir=cache_dir)
    service = ServiceProcess(directory=workdir, config=config, watchdog_usec=None)
    timeout_s = READY_TIMEOUT_S + _clip_seconds(spec.clip.path) * 4
    with TopicLog(prefix=prefix) as log:
        service.start()
        try:
            service.wait_ready(timeout=READY_TIMEOUT_S)
            finished = log.wait(_finished, timeout_s=timeout_s)
            counters = scrape_counters(service)
            # SIGTERM: the snapshot worker finishes its queue, so the files are final.
            service.terminate(timeout=30)
        finally:
            service.close()
            delete_retained(BROKER, filters=(f"{prefix}/#",))
        time.sleep(0.5)  # the last messages of the stop, already sent, reach the subscriber
        events, faces = log.of("events"), log.of("faces")
    return RunRecord(
        spec=spec,
        events=events,
        faces=faces,
        snapshot_dir=snapshots / spec.clip.key,
        counters=counters,
        finished=finished,
        log_tail=service.log()[-4000:],
    )


def _clip_seconds(path: Path) -> float:
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        return float(capture.get(cv2.CAP_PROP_FRAME_COUNT)) / fps
    finally:
        capture.release()


# -- tracks ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackSummary:
    """One track as its events tell it, and its snapshot file(s)."""

    event_id: str
    short_id: str
    start_s: float
    """First detection, seconds after the run's first track started."""
    last_s: float
    """Latest detection, on the same clock."""
    end_s: float
    """When the track ended (inf without an `end` event), on the same clock."""
    frames_seen: int
    best_confidence: float
    best_height_px: float
    first_box: Box
    """The box in the `new` event (the detection that confirmed the track)."""
    last_box: Box
    end_reason: str | None
    snapshots: tuple[Path, ...]
    """Files named for the event id: exactly one is what the product promises."""


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def short_id(event_id: str) -> str:
    """`t7` of `sheet-event-<run>-t7`: unique within one run of the service."""
    return event_id.rsplit("-", 1)[-1]


def _box(values: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def summarise_tracks(
    events: Sequence[Mapping[str, Any]], *, snapshot_dir: Path
) -> list[TrackSummary]:
    """A summary per event id, in start order, from its `new` and latest (normally `end`)
    event; snapshot files are looked up by the file name's event id."""
    first: dict[str, Mapping[str, Any]] = {}
    latest: dict[str, Mapping[str, Any]] = {}
    for event in events:
        first.setdefault(event["event_id"], event)
        latest[event["event_id"]] = event
    if not first:
        return []
    origin = min(_ts(event["start_ts"]) for event in first.values())
    tracks = [
        TrackSummary(
            event_id=event_id,
            short_id=short_id(event_id),
            start_s=_ts(last["start_ts"]) - origin,
            last_s=_ts(last["last_ts"]) - origin,
            end_s=math.inf if last["end_ts"] is None else _ts(last["end_ts"]) - origin,
            frames_seen=int(last["frames_seen"]),
            best_confidence=float(last["best"]["confidence"]),
            best_height_px=float(last["best"]["height_px"]),
            first_box=_box(first[event_id]["box"]),
            last_box=_box(last["box"]),
            end_reason=last["end_reason"],
            snapshots=tuple(sorted(snapshot_dir.glob(f"*-{event_id}.jpg"))),
        )
        for event_id, last in latest.items()
    ]
    return sorted(tracks, key=lambda track: (track.start_s, _number(track.short_id)))


def _number(short: str) -> int:
    """7 of `t7`, so that t10 sorts after t9; -1 for an id of another form."""
    digits = short.lstrip("t")
    return int(digits) if digits.isdigit() else -1


FALLBACK_MAX_MOVED = 2.0
FALLBACK_MAX_SIZE_RATIO = 1.5
"""The tracker's centre-distance fallback gates (edge_facedet.tracking.tracker), repeated to
word why a split was not joined; they are not settings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SuspectedSplit:
    """Track `after` started while `before` was open but unseen: maybe one face, two ids."""

    before: str
    after: str
    gap_s: float
    """From `before`'s latest detection to `after`'s first."""
    moved: float
    """Centre distance between those two boxes, in `before`'s box heights."""
    size_ratio: float
    """The larger of the two boxes' heights over the smaller."""
    cause: str


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _height(box: Box) -> float:
    return max(box[3] - box[1], 1.0)


def _split(before: TrackSummary, after: TrackSummary) -> SuspectedSplit:
    (bx, by), (ax, ay) = _centre(before.last_box), _centre(after.first_box)
    moved = math.hypot(ax - bx, ay - by) / _height(before.last_box)
    ratio = _height(after.first_box) / _height(before.last_box)
    ratio = max(ratio, 1.0 / ratio)
    if ratio > FALLBACK_MAX_SIZE_RATIO:
        cause = f"came back x{ratio:.1f} in size (the distance fallback takes x1.5)"
    elif moved > FALLBACK_MAX_MOVED:
        cause = f"came back {moved:.1f} face heights away (the distance fallback takes 2)"
    else:
        cause = "within the fallback's gates: taken by another track, or not seen high enough"
    return SuspectedSplit(
        before=before.short_id, after=after.short_id, gap_s=round(after.start_s - before.last_s, 2),
        moved=round(moved, 2), size_ratio=round(ratio, 2), cause=cause,
    )  # fmt: skip


def suspected_splits(
    tracks: Sequence[TrackSummary], *, max_moved: float = 5.0, max_size_ratio: float = 2.5
) -> list[SuspectedSplit]:
    """Tracks that started while an earlier one was open but unseen (coasting) nearby: every
    such pair within `max_moved` face heights and `max_size_ratio`, nearest first per track.

    The signature of a face the tracker lost and found again under a new id: the old track
    was still there to take it (a gap under max_age_s) and did not. A hint for the eye, not a
    verdict (the sheet decides): a face coming out from behind one that just left the frame
    fits as well as the one that left, so both are listed.
    """
    splits: list[SuspectedSplit] = []
    for after in tracks:
        coasting = [
            _split(before, after)
            for before in tracks
            if before is not after and before.last_s < after.start_s < before.end_s
        ]
        near = [s for s in coasting if s.moved <= max_moved and s.size_ratio <= max_size_ratio]
        splits += sorted(near, key=lambda split: split.moved)
    return splits


def new_after_camera_down(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Tracks whose `new` came after the first `end` with reason camera_down: on a file that
    ended, frames still in flight then start tracks for faces just ended (the same people)."""
    ended = [i for i, event in enumerate(events) if event["end_reason"] == "camera_down"]
    if not ended:
        return []
    later = events[ended[0] :]
    return [short_id(event["event_id"]) for event in later if event["type"] == "new"]


# -- the sheet ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SheetLayout:
    """A grid of square picture cells, each with its label lines below, under a title."""

    columns: int = 6
    cell_px: int = 150
    label_lines: int = 3
    line_px: int = 15
    pad_px: int = 8
    title_px: int = 30

    def __post_init__(self) -> None:
        if min(self.columns, self.cell_px, self.line_px) < 1 or self.pad_px < 0:
            raise ValueError("columns, cell_px and line_px must be positive, pad_px >= 0")

    @property
    def pitch(self) -> tuple[int, int]:
        """Horizontal and vertical distance between neighbouring cells' origins."""
        return (
            self.cell_px + self.pad_px,
            self.cell_px + self.label_lines * self.line_px + self.pad_px,
        )

    def size(self, count: int) -> tuple[int, int]:
        """Width and height of a sheet of `count` cells (at least one row, for the title)."""
        rows = max(1, math.ceil(count / self.columns))
        columns = min(max(count, 1), self.columns)
        dx, dy = self.pitch
        return self.pad_px + columns * dx, self.title_px + self.pad_px + rows * dy

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left corner of cell `index` (row-major: start order reads left to right)."""
        row, column = divmod(index, self.columns)
        dx, dy = self.pitch
        return self.pad_px + column * dx, self.title_px + self.pad_px + row * dy


@dataclass(frozen=True, slots=True)
class Tile:
    image: NDArray[np.uint8] | None
    """BGR; None draws a crossed cell (no snapshot file)."""
    lines: tuple[str, ...]


BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
MISSING = (60, 60, 200)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def fit(image: NDArray[np.uint8], *, side: int) -> NDArray[np.uint8]:
    """`image` scaled so its longer side is `side` (up or down), aspect kept."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(image, size, interpolation=interpolation), dtype=np.uint8)


def render_sheet(
    *, tiles: Sequence[Tile], title: str, layout: SheetLayout | None = None
) -> NDArray[np.uint8]:
    """The contact sheet: `tiles` in order, each picture centred in its cell, labels below."""
    layout = layout or SheetLayout()
    width, height = layout.size(len(tiles))
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[:] = BACKGROUND
    cv2.putText(sheet, title, (layout.pad_px, layout.title_px - 8), FONT, 0.55, TEXT, 1,
                cv2.LINE_AA)  # fmt: skip
    side = layout.cell_px
    for index, tile in enumerate(tiles):
        x, y = layout.origin(index)
        if tile.image is None:
            cv2.line(sheet, (x, y), (x + side - 1, y + side - 1), MISSING, 2)
            cv2.line(sheet, (x + side - 1, y), (x, y + side - 1), MISSING, 2)
        else:
            picture = fit(tile.image, side=side)
            ph, pw = picture.shape[:2]
            top, left = y + (side - ph) // 2, x + (side - pw) // 2
            sheet[top : top + ph, left : left + pw] = picture
        for line_no, text in enumerate(tile.lines[: layout.label_lines]):
            baseline = y + side + (line_no + 1) * layout.line_px - 3
            cv2.putText(sheet, text, (x, baseline), FONT, 0.42, TEXT, 1, cv2.LINE_AA)
    return sheet


def tile_for(track: TrackSummary) -> Tile:
    """The track's final best face, labelled: id and frames seen, best confidence and face
    height, how and when it ended. More than one file for the event is flagged."""
    image = None
    if track.snapshots:
        image = cv2.imread(str(track.snapshots[-1]), cv2.IMREAD_COLOR)
    files = "" if len(track.snapshots) <= 1 else f" {len(track.snapshots)} files!"
    return Tile(
        image=None if image is None else np.asarray(image, dtype=np.uint8),
        lines=(
            f"{track.short_id} seen {track.frames_seen}{files}",
            f"conf {track.best_confidence:.2f} h {track.best_height_px:.0f}px",
            f"{track.start_s:.1f}-{track.last_s:.1f}s {track.end_reason or 'open'}",
        ),
    )


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFigures:
    name: str
    clip: str
    detect_fps: float
    realtime: bool
    tracking: dict[str, Any]
    people: int
    tracks: int
    """`new` events: tracks a subscriber was told about."""
    frames_inferred: float
    frames_dropped: float
    snapshot_files: int
    events_without_one_file: list[str]
    splits: list[SuspectedSplit]
    new_after_camera_down: list[str]
    finished: bool
    sheet: str

    @property
    def order(self) -> tuple[str, bool, str, float]:
        """Clip, then real time first, defaults first, then detect_fps."""
        tracking = ",".join(f"{k}={v}" for k, v in sorted(self.tracking.items()))
        return self.clip, not self.realtime, tracking, self.detect_fps


def figures_for(record: RunRecord) -> tuple[RunFigures, list[TrackSummary]]:
    tracks = summarise_tracks(record.events, snapshot_dir=record.snapshot_dir)
    files = list(record.snapshot_dir.glob("*.jpg")) if record.snapshot_dir.is_dir() else []
    figures = RunFigures(
        name=record.spec.name,
        clip=record.spec.clip.key,
        detect_fps=record.spec.detect_fps,
        realtime=record.spec.realtime,
        tracking=dict(record.spec.tracking),
        people=record.spec.clip.people,
        tracks=sum(1 for event in record.events if event["type"] == "new"),
        frames_inferred=record.counters.get("frames_inferred", 0.0),
        frames_dropped=record.counters.get("frames_dropped", 0.0),
        snapshot_files=len(files),
        events_without_one_file=[t.short_id for t in tracks if len(t.snapshots) != 1],
        splits=suspected_splits(tracks),
        new_after_camera_down=new_after_camera_down(record.events),
        finished=record.finished,
        sheet=f"{record.spec.name}.png",
    )
    return figures, tracks


def _table_row(run: RunFigures) -> str:
    splits = ", ".join(f"{s.before}->{s.after}" for s in run.splits) or "-"
    tracking = ", ".join(f"{k}={v}" for k, v in run.tracking.items()) or "defaults"
    late = ", ".join(run.new_after_camera_down) or "-"
    return (
        f"| {run.name} | {run.detect_fps:g} | {'realtime' if run.realtime else 'fast'} | "
        f"{tracking} | {run.people} | {run.tracks} | {run.tracks / run.people:.2f} | "
        f"{run.frames_inferred:.0f} | {run.frames_dropped:.0f} | {run.snapshot_files} | "
        f"{splits} | {late} |"
    )


def figures_markdown(runs: Sequence[RunFigures]) -> str:
    lines = [
        "# Tracks against people (generated by benchmarks/contact_sheet.py)",
        "",
        "Each run's sheet is `<run>.png`, its events, faces messages and counters `<run>.json`.",
        "",
        (
            "| run | detect_fps | pace | tracking | people visible | tracks (new) | "
            "tracks/person | inferred | dropped | snapshot files | suspected splits | "
            "new after camera_down |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_table_row(run) for run in sorted(runs, key=lambda run: run.order)]
    lines += ["", "People visible, counted by eye:", ""]
    for clip in CLIPS.values():
        lines.append(f"* {clip.key} ({clip.path.name}): {clip.people}; {clip.how_counted}.")
    lines += ["", "Suspected splits (from the events; the sheet decides):", ""]
    for run in sorted(runs, key=lambda run: run.order):
        lines += [f"* {run.name}: {s.before}->{s.after} after {s.gap_s:g} s unseen: "
                  f"{s.cause}" for s in run.splits]  # fmt: skip
    problems = [run for run in runs if run.events_without_one_file or not run.finished]
    for run in problems:
        lines.append(
            f"* {run.name}: finished {run.finished}; events without exactly one snapshot "
            f"file: {', '.join(run.events_without_one_file) or '-'}"
        )
    return "\n".join(lines) + "\n"


def write_run(*, record: RunRecord, out: Path) -> RunFigures:
    """The run's PNG, and its figures (returned) with the evidence in `<name>.json`."""
    figures, tracks = figures_for(record)
    title = (
        f"{record.spec.clip.path.name}  detect_fps {record.spec.detect_fps:g}  "
        f"{'' if record.spec.realtime else 'realtime false  '}"
        f"tracks {figures.tracks}  people {figures.people}"
    )
    if record.spec.tracking:
        title += "  " + " ".join(f"{k}={v}" for k, v in record.spec.tracking.items())
    sheet = render_sheet(tiles=[tile_for(track) for track in tracks], title=title)
    if not cv2.imwrite(str(out / figures.sheet), sheet):
        raise RuntimeError(f"could not write {out / figures.sheet}")
    evidence = {
        "figures": asdict(figures),
        "tracks": [{**asdict(t), "snapshots": [str(p) for p in t.snapshots]} for t in tracks],
        "counters": record.counters,
        "events": record.events,
        "faces": record.faces,
        "log_tail": record.log_tail,
    }
    (out / f"{figures.name}.json").write_text(json.dumps(evidence, indent=1, default=str))
    return figures


def load_record(path: Path) -> RunRecord:
    """A run back from its `<name>.json` (and its snapshot files under `runs/`)."""
    evidence = json.loads(path.read_text())
    figures = evidence["figures"]
    spec = RunSpec(
        clip=CLIPS[figures["clip"]],
        detect_fps=float(figures["detect_fps"]),
        realtime=bool(figures["realtime"]),
        tracking=dict(figures["tracking"]),
    )
    return RunRecord(
        spec=spec,
        events=evidence["events"],
        faces=evidence["faces"],
        snapshot_dir=path.parent / "runs" / spec.name / "snapshots" / spec.clip.key,
        counters=evidence["counters"],
        finished=bool(figures["finished"]),
        log_tail=evidence["log_tail"],
    )


def evidence_files(out: Path) -> list[Path]:
    return sorted(path for path in out.glob("*.json") if path.name != "figures.json")


def write_index(out: Path) -> None:
    """figures.md over every run in `out`, this invocation's and earlier ones'."""
    runs = []
    for path in evidence_files(out):
        entry = json.loads(path.read_text())["figures"]
        entry["splits"] = [SuspectedSplit(**split) for split in entry["splits"]]
        runs.append(RunFigures(**entry))
    (out / "figures.md").write_text(figures_markdown(runs))


# -- command line ------------------------------------------------------------------------


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contact_sheet")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=sorted(CLIPS))
    parser.add_argument("--fps", nargs="+", type=float, default=[5.0, 10.0])
    parser.add_argument(
        "--fast",
        action="store_true",
        help="realtime: false (every due frame inferred, arrival-time clock)",
    )
    parser.add_argument(
        "--tracking",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tracking setting, e.g. max_age_s=4",
    )
    parser.add_argument("--cache-dir", type=Path, help="OpenVINO cache (default OUT/.cache)")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="no runs: redraw the sheets and figures of the runs already in OUT",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        for path in evidence_files(out):
            write_run(record=load_record(path), out=out)
        write_index(out)
        return 0
    cache_dir = (args.cache_dir or out / ".cache").resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    for key in args.clips:
        for fps in args.fps:
            spec = RunSpec(
                clip=CLIPS[key], detect_fps=fps, realtime=not args.fast,
                tracking=dict(args.tracking),
            )  # fmt: skip
            print(f"{spec.name}: running", flush=True)
            record = run_clip(spec=spec, workdir=out / "runs" / spec.name, cache_dir=cache_dir)
            figures = write_run(record=record, out=out)
            print(f"{spec.name}: {figures.tracks} tracks, {out / figures.sheet}", flush=True)
    write_index(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
