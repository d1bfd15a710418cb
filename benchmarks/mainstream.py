"""Snapshots from the main stream of a camera detected on its substream: alignment, latency,
resolution; and the feature's cost in capacity.

`python -m benchmarks.mainstream [--seconds 60] [--clips hikers,event] [--bframes 0,3]`
runs the real service in this process (so each snapshot's main-stream picture and boxes can
be looked at) against `tests/support/rtsp_pair_server.py`: one live producer serving a
1280x720 main and a 640x360 sub rendition of one clip, frame i of both at one moment. Each
`crop` snapshot taken from the main stream is checked against the detector's own box on the
very main-stream frame it was cut from (the frame squeezed to the network input as the model
sees a camera's frame; and `crop_view`), its frame is told apart by content from the clip's
(matched in time: the index of the substream picture the face was detected in), and its
latency from the best face's moment to the JPEG is split into the worker's steps. Writes
`results/mainstream/*.json` and a contact sheet of substream crops beside main-stream crops
of the same tracks (`--contact`: pictures of people, never into the repository).

`python -m benchmarks.mainstream capacity --cameras N [--pairs 3] [--seconds 30]` runs N
substream cameras (subprocess service, as the capacity benchmark does) with the main stream
on and off in interleaved pairs: detections/s per camera and on-time, load-sensitive.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import yaml

from benchmarks.media import P360, P720, Clips, start_rtsp
from benchmarks.rtsp_drain import Drains
from benchmarks.service_run import Camera, Observed, run_service
from edge_facedet.config.snapshots import SnapshotConfig, SnapshotMode
from edge_facedet.frames import ArrayPicture
from edge_facedet.outputs.snapshots.mainframe import MainStreams
from edge_facedet.outputs.snapshots.refine import (
    REFINE_SHIFTS,
    SyncFaceDetector,
    iou,
    mean_of_agreeing,
    shifted_region,
)
from edge_facedet.outputs.snapshots.render import render_snapshot
from edge_facedet.outputs.snapshots.worker import SnapshotWorker
from tests.support.media import run_ffmpeg
from tests.support.net import free_port
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MODEL_ROOT, REPO
from tests.support.rtsp_pair import RtspPair

CACHE = REPO / "results" / "bench-cache"
MODEL_XML = MODEL_ROOT / "intel" / "face-detection-0204" / "FP16-INT8" / "face-detection-0204.xml"
CLIPS = {"hikers": HIKERS_VIDEO, "event": FACE_VIDEO}
FPS = 25
PRINT = (64, 36)
"""Frame fingerprints: small grey pictures, to tell a decoded frame's index in its clip."""
TARGET_IOU = 0.8
TILE = 448
"""The network's input: a tile of the frame the detector sees at the frame's own resolution."""
SHIFT_PX = 5
"""How far a reference's frame is moved to check the reference against itself."""
PASS_FPS = 4.5  # detections/s of a camera on time, as benchmarks.run counts them
# Shares of the main-stream snapshots: refined (mapped) boxes agreeing with the detector's,
SHARES = {  # frames the substream's, matched on the RTCP clock, decoded from a keyframe.
    "aligned_full": lambda r: r["iou_full"] >= TARGET_IOU,
    "aligned_crop": lambda r: r["iou_crop"] >= TARGET_IOU,
    "aligned_tile": lambda r: r["iou_tile"] >= TARGET_IOU,
    "tile_stable": lambda r: r["tile_stable"] >= TARGET_IOU,
    "full_stable": lambda r: r["full_stable"] >= TARGET_IOU,
    # The references averaged over the region moved across the anchor grid, as refine does.
    "aligned_full_avg": lambda r: r["iou_full_avg"] >= TARGET_IOU,
    "aligned_tile_avg": lambda r: r["iou_tile_avg"] >= TARGET_IOU,
    "full_avg_stable": lambda r: r["full_avg_stable"] >= TARGET_IOU,
    "tile_avg_stable": lambda r: r["tile_avg_stable"] >= TARGET_IOU,
    "mapped_full": lambda r: r["iou_mapped_full"] >= TARGET_IOU,
    "matched": lambda r: r["matched"],
    "rtcp": lambda r: r["clock"] == "rtcp",
    "restarted": lambda r: r["restarted"],
}


# -- inputs ---------------------------------------------------------------------------------


def rendition(source: Path, *, size: tuple[int, int], bframes: int, seconds: float) -> Path:
    """`seconds` of `source` looped, at 25 fps, GOP 2 s; main at 3.75 Mbit/s, sub 0.8."""
    rate = P720.bitrate if size[0] >= 1280 else P360.bitrate
    target = CACHE / f"pair-{source.stem}-{size[0]}x{size[1]}-b{bframes}-{seconds:g}.mp4"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        run_ffmpeg(
            "-stream_loop", "-1", "-i", str(source), "-t", f"{seconds:g}", "-an",
            "-vf", f"fps={FPS},scale={size[0]}:{size[1]},setsar=1",
            "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-keyint_min", "50",
            "-sc_threshold", "0", "-bf", str(bframes), "-pix_fmt", "yuv420p",
            "-b:v", rate, "-maxrate", rate, "-bufsize", rate, "-movflags", "+faststart",
            output=target,
        )  # fmt: skip
    return target


def fingerprint(image: np.ndarray) -> np.ndarray:
    gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), PRINT, interpolation=cv2.INTER_AREA)
    return gray.astype(np.float32)


def fingerprints(clip: Path) -> np.ndarray:
    """Every frame's fingerprint, decoded as the service decodes (cached beside the clip)."""
    if not (cached := clip.with_suffix(".prints.npy")).exists():
        with av.open(str(clip)) as container:
            frames = container.decode(video=0)
            np.save(cached, np.stack([fingerprint(f.to_ndarray(format="bgr24")) for f in frames]))
    return np.asarray(np.load(cached))


def frame_index(prints: np.ndarray, image: np.ndarray, *, near: int) -> int:
    """The index of the clip frame `image` is, searched 3 s either side of `near`."""
    low, high = max(0, near - 3 * FPS), min(len(prints), near + 3 * FPS + 1)
    if low >= high:
        return -1
    distances = np.abs(prints[low:high] - fingerprint(image)).mean(axis=(1, 2))
    return low + int(np.argmin(distances))


# -- recording the service's snapshots, in this process ---------------------------------------


@dataclass
class Shot:
    """One main-stream snapshot as the worker took it."""

    moment: float
    sub_image: np.ndarray
    sub_box: tuple[float, ...]
    taken: Any = None
    """The worker's `MainPicture`; None when the substream's picture was used."""
    main_image: np.ndarray | None = None
    mapped_box: tuple[float, ...] = ()
    result: Any = None
    """The worker's `SnapshotResult`; None while queued."""
    done: float = 0.0


class Recorder:
    """Wraps `MainStreams.take` and the worker's result callback (public calls, patched on
    the classes for the run) to keep each snapshot's pictures."""

    def __init__(self) -> None:
        # By (camera, the face's moment, its box): two faces of one frame are two jobs.
        self.shots: dict[tuple[Any, ...], Shot] = {}
        self._saved: list[tuple[type, str, Any]] = []

    def __enter__(self) -> Recorder:
        take, init = MainStreams.take, SnapshotWorker.__init__
        recorder = self

        def recorded_take(self: MainStreams, camera_id: str, **kwargs: Any) -> Any:
            ref, detected, boxes = kwargs["ref"], kwargs["detected"], kwargs["boxes_norm"]
            shot = Shot(ref.moment, detected.to_bgr().copy(), tuple(boxes[0]))
            recorder.shots[(camera_id, ref.moment, tuple(boxes[0]))] = shot
            taken = take(self, camera_id, **kwargs)
            shot.taken, shot.main_image = taken, taken.picture.to_bgr()
            height, width = shot.main_image.shape[:2]
            box = boxes[0]
            shot.mapped_box = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
            return taken

        def recorded_init(self: SnapshotWorker, *, on_result: Any, **kwargs: Any) -> None:
            def on(result: Any) -> None:
                recorder.result(result)
                on_result(result)

            init(self, on_result=on, **kwargs)

        patches = (
            (MainStreams, "take", recorded_take),
            (SnapshotWorker, "__init__", recorded_init),
        )
        for cls, name, value in patches:
            self._saved.append((cls, name, getattr(cls, name)))
            setattr(cls, name, value)
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, value in self._saved:
            setattr(cls, name, value)

    def result(self, result: Any) -> None:
        job = result.job
        key = (job.camera_id, job.time.timestamp(), tuple(job.box_norm))
        shot = self.shots.get(key)
        if shot is None:
            shot = Shot(key[1], job.picture.to_bgr().copy(), tuple(job.box_norm))
            self.shots[key] = shot
        shot.result = result
        shot.done = time.time()


def run_inprocess(*, cameras: list[dict[str, Any]], seconds: float, workdir: Path) -> None:
    """The service (`edge-facedet run` without the process) for `seconds` after READY."""
    from edge_facedet.config import load_config  # noqa: PLC0415
    from edge_facedet.service import Service  # noqa: PLC0415

    (snapshot_dir := workdir / "snapshots").mkdir(parents=True, exist_ok=True)
    config = {
        "node_id": "bench-main",
        "model": {"precision": "FP16-INT8", "dir": str(MODEL_ROOT), "device": "CPU",
                  "cache_dir": str(CACHE / "openvino")},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic_prefix": f"bench/{os.getpid()}"},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "snapshot_dir": {"path": str(snapshot_dir), "min_free_bytes": 0},
        "defaults": {"detect_fps": 5, "decoder_threads": 1, "motion": {"enabled": False}},
        "cameras": cameras,
    }  # fmt: skip
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    service = Service(config=load_config(path), config_path=path)

    async def main() -> None:
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(service.ready.wait(), 120)
        await asyncio.sleep(seconds)
        service.request_stop()
        await task

    asyncio.run(main())


# -- the alignment run -----------------------------------------------------------------------


def alignment(args: argparse.Namespace) -> dict[str, Any]:
    finder = SyncFaceDetector(model_xml=MODEL_XML, cache_dir=CACHE / "openvino")
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[np.ndarray, np.ndarray, str]] = []
    for clip in args.clips.split(","):
        for bframes in (int(b) for b in args.bframes.split(",")):
            name, length = f"{clip}-b{bframes}", args.seconds + 40
            main = rendition(CLIPS[clip], size=(1280, 720), bframes=bframes, seconds=length)
            sub = rendition(CLIPS[clip], size=(640, 360), bframes=bframes, seconds=length)
            prints = {"main": fingerprints(main), "sub": fingerprints(sub)}
            server = RtspPair(main=main, sub=sub)
            camera = {"id": name.replace("-", "_"), "url": server.url("main"),
                      "detect_url": server.url("sub"), "decoder": args.decoder,
                      "snapshots": {"mode": "crop", "max_size_px": 4096}}  # fmt: skip
            try:
                with Recorder() as recorder, tempfile.TemporaryDirectory() as work:
                    run_inprocess(cameras=[camera], seconds=args.seconds, workdir=Path(work))
            finally:
                server.kill()
            # Jobs still queued at the stop are left out.
            for shot in [s for s in recorder.shots.values() if s.result and not s.result.error]:
                row = measure(shot, finder=finder, prints=prints, started=server.started)
                rows.append({"scenario": name, **row})
                if shot.result.source == "main" and shot.result.jpeg is not None:
                    pairs.append((sub_crop(shot), _decode(shot.result.jpeg), name))
    contact_sheet(pairs, out=Path(args.contact))
    return {"rows": rows, "summary": summarise(rows)}


def measure(
    shot: Shot, *, finder: SyncFaceDetector, prints: dict[str, np.ndarray], started: float
) -> dict[str, Any]:
    near, timings = round((shot.moment - started) * FPS), dict(getattr(shot.result, "timings", {}))
    row: dict[str, Any] = {
        "event": shot.result.job.event_id, "source": shot.result.source, "timings": timings,
        # Until the job was queued: the tracker's choice of when, not the worker's time.
        "request_s": shot.done - shot.moment - sum(timings.values()),
        "latency_s": shot.done - shot.moment,
        "sub_index": frame_index(prints["sub"], shot.sub_image, near=near),
    }  # fmt: skip
    if shot.result.source != "main" or shot.main_image is None:
        return row
    image, box, taken = shot.main_image, shot.taken.box_px, shot.taken
    whole = (0, 0, image.shape[1], image.shape[0])
    full = reference(finder, image, region=whole)
    crop = reference(finder, image, region=crop_view(box, size=image.shape[:2]))
    # The same frame at its own resolution: the grid tile the mapped box (the substream's
    # face, not the refined box) sits most central in; and each reference against itself on
    # the frame shifted by a few pixels, to see how far it can be trusted.
    tile = grid_tile(shot.mapped_box, size=image.shape[:2])
    tiled = reference(finder, image, region=tile) if tile is not None else full
    size = image.shape[:2]
    tile_again = reference(finder, image, region=_moved(tile or whole, SHIFT_PX, clip=size))
    full_again = reference(finder, image, region=_moved(whole, SHIFT_PX, clip=size))
    averaged = {
        name: [averaged_reference(finder, image, region=r, near=box) for r in regions]
        for name, regions in (
            ("full", (whole, _moved(whole, SHIFT_PX, clip=size))),
            ("tile", (tile or whole, _moved(tile or whole, SHIFT_PX, clip=size))),
        )
    }
    sub_h = (shot.sub_box[3] - shot.sub_box[1]) * shot.sub_image.shape[0]
    main_index = frame_index(prints["main"], image, near=near)
    return {
        **row, "main_index": main_index, "matched": main_index == row["sub_index"],
        # getattr: the same run against an older tree (before/after comparisons).
        "clock": getattr(taken, "clock", "arrival"), "decoded": getattr(taken, "decoded", -1),
        "restarted": getattr(taken, "restarted", True), "refined": taken.refined,
        "iou_full": best_iou(full, box), "iou_crop": best_iou(crop, box),
        "iou_tile": best_iou(tiled, box), "tile": tile is not None,
        "tile_stable": _self_iou(tiled, tile_again, near=box),
        "full_stable": _self_iou(full, full_again, near=box),
        "iou_mapped_full": best_iou(full, shot.mapped_box),
        **{f"iou_{name}_avg": best_iou(pair[0], box) for name, pair in averaged.items()},
        **{f"{name}_avg_stable": _self_iou(pair[0], pair[1], near=box)
           for name, pair in averaged.items()},
        "face_px": [round(box[3] - box[1], 1), round(sub_h, 1)],
        "pixel_ratio": (box[3] - box[1]) / sub_h if sub_h > 0 else None,
    }  # fmt: skip


def crop_view(box: tuple[float, ...], *, size: tuple[int, int]) -> tuple[int, ...]:
    """A region of the frame's own aspect, 6x the face's height: squeezed to the input it
    distorts the face as the full frame does, at about three times its size."""
    height = min(6.0 * (box[3] - box[1]), size[0])
    width = min(height * size[1] / size[0], size[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    left = int(min(max(cx - width / 2, 0), size[1] - width))
    top = int(min(max(cy - height / 2, 0), size[0] - height))
    return left, top, int(left + width), int(top + height)


def grid_tile(box: tuple[float, ...], *, size: tuple[int, int]) -> tuple[int, ...] | None:
    """Of the TILE-px squares on a TILE/2 grid over the frame, the one whose centre is
    nearest the box's; None when the face is too large for a tile to hold it well."""
    height, width = size
    if box[3] - box[1] > 0.6 * TILE or min(size) < TILE:
        return None
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2

    def starts(extent: int) -> list[int]:
        return sorted({*range(0, extent - TILE, TILE // 2), extent - TILE})

    left = min(starts(width), key=lambda x: abs(x + TILE / 2 - cx))
    top = min(starts(height), key=lambda y: abs(y + TILE / 2 - cy))
    return left, top, left + TILE, top + TILE


def _moved(region: tuple[int, ...], by: int, *, clip: tuple[int, int]) -> tuple[int, ...]:
    """`region` moved right and down by `by` px, cut at the frame's edge."""
    left, top, right, bottom = region
    return left + by, top + by, min(right + by, clip[1]), min(bottom + by, clip[0])


def _self_iou(first: list, second: list, *, near: tuple[float, ...]) -> float:
    """IoU of the two references' faces nearest `near` (0 when either has none near)."""
    picked = [max(boxes, key=lambda b: iou(tuple(b), tuple(near)), default=None)
              for boxes in (first, second)]  # fmt: skip
    if picked[0] is None or picked[1] is None or iou(tuple(picked[0]), tuple(near)) == 0:
        return 0.0
    return iou(tuple(picked[0]), tuple(picked[1]))  # type: ignore[arg-type]


def reference(finder: SyncFaceDetector, image: np.ndarray, *, region: tuple[int, ...]) -> list:
    """The detector's faces (confidence >= 0.5) in `region` of `image`, squeezed to its
    input as the service does (INTER_LINEAR), in `image` pixels."""
    left, top, right, bottom = region
    view = cv2.resize(image[top:bottom, left:right], finder.input_size)  # INTER_LINEAR
    rows = finder.find(np.ascontiguousarray(view))
    width, height = right - left, bottom - top
    return [
        (left + x0 * width, top + y0 * height, left + x1 * width, top + y1 * height)
        for conf, x0, y0, x1, y1 in rows.tolist()
        if conf >= 0.5
    ]


def averaged_reference(
    finder: SyncFaceDetector, image: np.ndarray, *, region: tuple[int, ...], near: tuple[float, ...]
) -> list:
    """The reference face nearest `near`, averaged as refine averages its looks: `region`
    moved by each of REFINE_SHIFTS network pixels; [] when no look has a face over `near`."""
    left, _, right, _ = region
    looks = []
    for shift in REFINE_SHIFTS:
        size = image.shape[:2]
        moved = shifted_region(region, shift, input_size=finder.input_size, size=size)  # type: ignore[arg-type]
        if moved == region and shift:  # the whole frame: cut at the top left instead
            moved = _moved(region, round(shift * (right - left) / TILE), clip=size)
        faces = reference(finder, image, region=moved)
        pick = max(faces, key=lambda b: iou(tuple(b), tuple(near)), default=None)
        looks.append(None if pick is None or iou(tuple(pick), tuple(near)) == 0 else tuple(pick))
    mean = mean_of_agreeing(looks)  # refine's own rule
    return [] if mean is None else [mean]


def best_iou(boxes: list, box: tuple[float, ...]) -> float:
    return max((iou(tuple(b), tuple(box)) for b in boxes), default=0.0)  # type: ignore[arg-type]


def sub_crop(shot: Shot) -> np.ndarray:
    config = SnapshotConfig(mode=SnapshotMode.CROP, max_size_px=4096)
    jpeg = render_snapshot(
        picture=ArrayPicture(shot.sub_image), mode=SnapshotMode.CROP, config=config,
        box_norm=shot.sub_box, boxes_norm=(),  # type: ignore[arg-type]
    )  # fmt: skip
    return _decode(jpeg)


def _decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in [*sorted({r["scenario"] for r in rows}), "all"]:
        mine = [r for r in rows if scenario in {"all", r["scenario"]}]
        main = [r for r in mine if r["source"] == "main"]
        latencies = [r["latency_s"] for r in main]
        worker = [r["latency_s"] - r["request_s"] for r in main]
        steps = {k for r in main for k in r["timings"]}
        shares = {key: _share(main, test) for key, test in SHARES.items()}
        out[scenario] = {
            "snapshots": len(mine), "main": len(main), **shares,
            "decoded_per_snapshot": _quantile([r["decoded"] for r in main], 0.5),
            "latency_p50": _quantile(latencies, 0.5), "latency_p99": _quantile(latencies, 0.99),
            "steps_median": {k: _quantile([r["timings"].get(k, 0.0) for r in main], 0.5)
                             for k in sorted(steps)},
            "request_median": _quantile([r["request_s"] for r in main], 0.5),
            "queued_to_jpeg_p50_p99": [_quantile(worker, 0.5), _quantile(worker, 0.99)],
            "pixel_ratio_median": _quantile([r["pixel_ratio"] or 0.0 for r in main], 0.5),
            "by_height": {band: {"n": len(rows_), **{key: _share(rows_, SHARES[key]) for key in
                                 ("aligned_full", "aligned_tile", "full_stable", "tile_stable",
                                  "aligned_full_avg", "aligned_tile_avg", "full_avg_stable",
                                  "tile_avg_stable")}}
                          for band, rows_ in _bands(main).items()},
        }  # fmt: skip
    return out


def _bands(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Main-stream snapshots by the refined face's height in main-stream pixels."""
    bands: dict[str, list[dict[str, Any]]] = {"<40": [], "40-80": [], ">=80": []}
    for row in rows:
        height = row["face_px"][0]
        bands["<40" if height < 40 else "40-80" if height < 80 else ">=80"].append(row)
    return bands


def _share(rows: list[dict[str, Any]], test: Any) -> float | None:
    return round(sum(bool(test(r)) for r in rows) / len(rows), 3) if rows else None


def _quantile(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v == v)  # noqa: PLR0124 - drops NaN
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray, str]], *, out: Path) -> None:
    """A grid of cells (the substream crop at its own size; the same blown up, nearest
    neighbour, to the main crop's size; the main-stream crop), all shown 200 px high."""
    if not pairs:
        return
    cells = []
    for sub, main, name in pairs[:: max(1, len(pairs) // 18)][:18]:
        blown = cv2.resize(sub, (main.shape[1], main.shape[0]), interpolation=cv2.INTER_NEAREST)
        native = np.pad(sub, ((0, max(0, 200 - sub.shape[0])), (0, 0), (0, 0)))
        cell = np.hstack(
            [np.pad(_height(t, 200), ((0, 0), (0, 6), (0, 0))) for t in (native, blown, main)]
        )
        cell = np.pad(cell, ((22, 10), (0, 10), (0, 0)))
        label = f"{name}: sub {sub.shape[1]}x{sub.shape[0]}, main {main.shape[1]}x{main.shape[0]}"
        cv2.putText(cell, label, (2, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        cells.append(cell)
    width = max(c.shape[1] for c in cells)
    cells = [np.pad(c, ((0, 0), (0, width - c.shape[1]), (0, 0))) for c in cells]
    cells += [np.zeros_like(cells[0])] * (-len(cells) % 3)
    rows = [np.hstack(cells[i : i + 3]) for i in range(0, len(cells), 3)]
    cv2.imwrite(str(out), np.vstack(rows))


def _height(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    shrink = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_NEAREST
    return cv2.resize(image, (width, height), interpolation=shrink)


# -- capacity, feature on against off ------------------------------------------------------


def capacity(
    *,
    cameras: int,
    pairs: int,
    seconds: float,
    workdir: Path,
    update_interval_s: float,
    drain_main: bool = True,
) -> dict[str, Any]:
    """N substream cameras with snapshots `crop`, main stream off then on, `pairs` times:
    detections/s per camera and whether every camera was on time (as benchmarks.run).

    With `drain_main`, the off arm plays the main mounts too and discards them (rtsp_drain.py),
    so the RTSP server, on the same cores, works as much in both arms: a camera encodes and
    sends its main stream whether or not the node reads it."""
    clips, length = Clips(cache_dir=CACHE), seconds + 120  # each run starts its server anew
    main, sub = (clips.long(profile=profile, seconds=length) for profile in (P720, P360))
    runs: list[dict[str, Any]] = []
    for index, enabled in enumerate([False, True] * pairs):
        mounts = {f"{kind}{i}": clip for i in range(cameras)
                  for kind, clip in (("main", main), ("sub", sub))}  # fmt: skip
        server = start_rtsp(mounts=mounts)
        settings = {"snapshots": {"mode": "crop"}, "main_stream": {"enabled": enabled},
                    "tracking": {"update_interval_s": update_interval_s}}  # fmt: skip
        drains = Drains(
            [server.url(f"main{i}") for i in range(cameras)] if drain_main and not enabled else []
        )
        try:
            with drains:
                result = run_service(
                    cameras=[Camera(id=f"cam{i}", url=server.url(f"main{i}"),
                                    detect_url=server.url(f"sub{i}"),
                                    settings=copy.deepcopy(settings))  # no YAML aliases
                             for i in range(cameras)],
                    detect_fps=5.0, warmup_s=8.0, seconds=seconds,
                    workdir=workdir / f"run{index}", cache_dir=CACHE / "openvino",
                    neighbours={"rtsp_server": server.pid},
                    observed=Observed(kinds=("faces", "events"), snapshot_dir=True),
                )  # fmt: skip
        finally:
            server.kill()
        on_time = result.min_camera_fps >= PASS_FPS and result.stale_per_s < 0.1
        runs.append({"main_stream": enabled, "main_drained": drain_main and not enabled,
                     "server_cores": result.neighbour_cores.get("rtsp_server"),
                     "per_camera": result.total_fps / cameras,
                     "min_camera": result.min_camera_fps, "on_time": on_time,
                     "cpu_cores": result.cpu_s / result.seconds, "load": os.getloadavg()[0],
                     "snapshots": result.track_counters})  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    on = [r["per_camera"] for r in runs if r["main_stream"]]
    off = [r["per_camera"] for r in runs if not r["main_stream"]]
    return {"runs": runs, "ratio_on_off": statistics.median(on) / statistics.median(off)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="alignment", choices=["alignment", "capacity"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clips", default="hikers,event")
    parser.add_argument("--bframes", default="0,3")
    parser.add_argument("--decoder", default="opencv", choices=["opencv", "pyav"])
    parser.add_argument("--contact", default="/tmp/h5_contact.png")  # noqa: S108
    parser.add_argument("--cameras", type=int, default=24)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--update-interval",
        type=float,
        default=3.0,
        help="tracking.update_interval_s (default: the service's)",
    )
    parser.add_argument(
        "--no-drain",
        action="store_true",
        help="capacity: the off arm leaves the main mounts unplayed (the server then works less)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mainstream")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "capacity":
        with tempfile.TemporaryDirectory() as work:
            report = capacity(
                cameras=args.cameras,
                pairs=args.pairs,
                seconds=args.seconds,
                workdir=Path(work),
                update_interval_s=args.update_interval,
                drain_main=not args.no_drain,
            )
    else:
        report = alignment(args)
    name = f"mainstream-{args.what}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    (args.out / name).write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report.get("summary", report), indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
