"""Detector throughput on this machine, side by side with OpenVINO's own `benchmark_app`.

Owns three measurements for face-detection-0204 (FP16 and FP16-INT8, THROUGHPUT hint):

(a) `benchmark_app -m XML -d DEVICE -hint throughput -t SECONDS`: the runtime's ceiling;
(b) `OpenVinoDetector.detect` driven by an asyncio loop that keeps `max_inflight` calls busy,
    at batch 1, 2 and 4, on real pre-resized frames: frames/s and the ratio to (a);
(c) the resize embedded in the model (`ResizeInModelDetector`, fed 640x480 / 1280x720 frames)
    against `cv2.resize` (in a worker thread, as the readers do) + the static model, in
    frames/s including the resize.

Run: `.venv/bin/python benchmarks/detector_throughput.py [--seconds 10] [--repeats 2]`; it
prints a markdown table. Every figure is the best of `--repeats` runs, since the machine may
be shared (the load average is printed with the results).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import openvino as ov
from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

from edge_facedet.inference.detector import OpenVinoDetector

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_FACEDET_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models" / "intel" / "face-detection-0204"
VIDEOS = [
    SHARED / "media" / "videos" / "openmpf_video_01_event_faces_640x480.mp4",
    SHARED / "media" / "videos" / "openmpf_video_02_hikers_walking_640x480.mp4",
]
_THROUGHPUT = re.compile(r"Throughput:\s+([0-9.]+)\s+FPS")


class ResizeInModelDetector(OpenVinoDetector):
    """The detector with OpenVINO's linear resize in the graph too: takes frames of any size.

    Measured against cv2.resize in a worker thread, for (c) only; the service resizes in its
    readers (docs/detector-benchmark.md).
    """

    @staticmethod
    def _build_preprocessing(model: ov.Model) -> ov.Model:
        ppp = PrePostProcessor(model)
        tensor = ppp.input().tensor()
        tensor.set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        tensor.set_spatial_dynamic_shape()
        ppp.input().preprocess().resize(ResizeAlgorithm.RESIZE_LINEAR)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        return ppp.build()

    def _check_frame_size(self, width_height: tuple[int, ...]) -> None:
        pass  # any size: the graph resizes


def model_xml(precision: str) -> Path:
    return MODELS / precision / "face-detection-0204.xml"


def real_frames(count: int) -> list[NDArray[np.uint8]]:
    """`count` 640x480 BGR frames with faces, alternating between the two clips."""
    frames: list[NDArray[np.uint8]] = []
    for video in VIDEOS:
        capture = cv2.VideoCapture(str(video))
        for _ in range(count // len(VIDEOS)):
            ok, frame = capture.read()
            if not ok:
                raise RuntimeError(f"{video}: cannot decode")
            frames.append(np.asarray(frame, np.uint8))
        capture.release()
    return frames


def resize_all(
    frames: Sequence[NDArray[np.uint8]], size: tuple[int, int]
) -> list[NDArray[np.uint8]]:
    return [
        np.asarray(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR), np.uint8) for f in frames
    ]


def benchmark_app_command() -> list[str]:
    beside = Path(sys.executable).with_name("benchmark_app")
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "openvino.tools.benchmark.main"]


def run_benchmark_app(*, xml: Path, device: str, seconds: int) -> float:
    """frames/s from benchmark_app's Throughput line."""
    command = [*benchmark_app_command(), "-m", str(xml), "-d", device]
    command += ["-hint", "throughput", "-t", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    match = _THROUGHPUT.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no Throughput line in benchmark_app output:\n{done.stdout}")
    return float(match.group(1))


async def drive(
    *,
    detector: OpenVinoDetector,
    frames: Sequence[NDArray[np.uint8]],
    seconds: float,
    prepare: Callable[[list[NDArray[np.uint8]]], list[NDArray[np.uint8]]] | None = None,
) -> float:
    """frames/s with `max_inflight` callers each awaiting `detect` back to back.

    `prepare` runs on each batch in a worker thread before `detect` (the cv2.resize path);
    its cost is therefore inside the figure, as it is in the service's reader threads.
    """
    size = detector.batch_size
    batches = [list(frames[i : i + size]) for i in range(0, len(frames) - size + 1, size)]
    done = 0
    stop = 0.0

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            batch = batches[i % len(batches)]
            if prepare is not None:
                batch = await asyncio.to_thread(prepare, batch)
            await detector.detect(batch)
            done += size
            i += 1

    callers = detector.max_inflight
    stop = time.perf_counter() + min(2.0, seconds / 4)  # warm-up, not counted
    await asyncio.gather(*(caller(i) for i in range(callers)))
    done = 0
    started = time.perf_counter()
    stop = started + seconds
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return done / (time.perf_counter() - started)


def detector_fps(
    *,
    xml: Path,
    device: str,
    batch_size: int,
    frames: Sequence[NDArray[np.uint8]],
    seconds: float,
    repeats: int,
    resize_in_model: bool = False,
    prepare: Callable[[list[NDArray[np.uint8]]], list[NDArray[np.uint8]]] | None = None,
) -> tuple[float, int]:
    """(best frames/s over `repeats` runs, infer requests)."""
    detector_class = ResizeInModelDetector if resize_in_model else OpenVinoDetector
    detector = detector_class(
        model_xml=xml, device=device, performance_hint="THROUGHPUT", batch_size=batch_size
    )

    async def best_of() -> float:
        # One loop for every repeat: detect binds a detector to the loop of its first call.
        runs = [
            await drive(detector=detector, frames=frames, seconds=seconds, prepare=prepare)
            for _ in range(repeats)
        ]
        return max(runs)

    best = asyncio.run(best_of())
    detector.wait_idle()
    return best, detector.max_inflight


@dataclass
class Row:
    precision: str
    device: str
    what: str
    fps: float
    reference: float | None = None
    note: str = ""

    def markdown(self) -> str:
        ratio = f"{self.fps / self.reference:.2f}" if self.reference else ""
        ref = f"{self.reference:.1f}" if self.reference else ""
        return (
            f"| {self.precision} | {self.device} | {self.what} | {self.fps:.1f} | {ref} "
            f"| {ratio} | {self.note} |"
        )


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        platform.processor(),
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} logical CPUs; OpenVINO {ov.get_version()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average {load}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="per detector run")
    parser.add_argument("--app-seconds", type=int, default=15, help="per benchmark_app run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the best is kept")
    parser.add_argument("--precisions", nargs="+", default=["FP16", "FP16-INT8"])
    parser.add_argument("--devices", nargs="+", default=["AUTO", "CPU"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--skip-resize", action="store_true", help="skip part (c)")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}", flush=True)
    full = real_frames(32)
    network = resize_all(full, (448, 448))
    rows: list[Row] = []
    for precision in args.precisions:
        xml = model_xml(precision)
        for device in args.devices:
            app = max(
                run_benchmark_app(xml=xml, device=device, seconds=args.app_seconds)
                for _ in range(args.repeats)
            )
            rows.append(Row(precision, device, "benchmark_app", app))
            print(rows[-1].markdown(), flush=True)
            for batch in args.batches:
                fps, requests = detector_fps(
                    xml=xml,
                    device=device,
                    batch_size=batch,
                    frames=network,
                    seconds=args.seconds,
                    repeats=args.repeats,
                )
                rows.append(
                    Row(precision, device, f"detect, batch {batch}", fps, app, f"{requests} req")
                )
                print(rows[-1].markdown(), flush=True)
        if args.skip_resize:
            continue
        for width, height in ((640, 480), (1280, 720)):
            frames = resize_all(full, (width, height))
            static, _ = detector_fps(
                xml=xml,
                device="CPU",
                batch_size=1,
                frames=frames,
                seconds=args.seconds,
                repeats=args.repeats,
                prepare=lambda batch: resize_all(batch, (448, 448)),
            )
            rows.append(Row(precision, "CPU", f"{width}x{height}: cv2.resize + static", static))
            print(rows[-1].markdown(), flush=True)
            embedded, _ = detector_fps(
                xml=xml,
                device="CPU",
                batch_size=1,
                frames=frames,
                seconds=args.seconds,
                repeats=args.repeats,
                resize_in_model=True,
            )
            rows.append(
                Row(precision, "CPU", f"{width}x{height}: resize_in_model", embedded, static)
            )
            print(rows[-1].markdown(), flush=True)

    print()
    print(f"machine: {machine()}")
    print()
    print("| precision | device | what | frames/s | reference | ratio | note |")
    print("|---|---|---|---:|---:|---:|---|")
    for row in rows:
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
