"""The two ceilings the service is measured against: inference alone and decoding alone.

Inference: OpenVINO's `benchmark_app` on the service's model, device and hint (called the way
`benchmarks/detector_throughput.py` calls it). Decoding: one OpenCV capture with one decoder
thread (`CAP_PROP_N_THREADS=1`) reading a clip, with the CPU time of this thread
(`time.thread_time`) split into `grab()` (demux + H.264 decode), `retrieve()` (conversion to
BGR) and `cv2.resize` to the network input. Per-frame CPU costs divide into the machine's
cores to give capacities, so the ceilings need no idle machine to be meaningful as costs.

A clip read as fast as possible is the cheapest way to decode: each frame follows the last
with the decoder's state hot in the caches. A live camera sends a frame every 40 ms and its
reader sleeps in between, while other readers and the detector run. `live_decode_cost`
measures that case: several captures of live RTSP streams read in real time, one thread each.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from benchmarks.detector_throughput import run_benchmark_app
from edge_facedet.sources.decoders import prefer_rtsp_over_tcp


@dataclass(frozen=True)
class DecodeCost:
    """CPU milliseconds per frame of one clip, one decoder thread."""

    clip: str
    grab_ms: float
    bgr_ms: float
    resize_ms: float
    frames: int

    def capacity_fps(self, *, cores: int) -> float:
        """Frames/s all cores could decode and convert (the decode ceiling)."""
        return cores * 1000.0 / (self.grab_ms + self.bgr_ms)


@dataclass(frozen=True)
class LiveDecodeCost:
    """CPU milliseconds per frame of live streams read in real time, one thread per stream."""

    streams: int
    grab_ms: float
    """`grab()` per frame, mean over the streams."""
    fps: float
    """Frames read per second per stream (the stream rate when the readers keep up)."""


def cores() -> int:
    return len(os.sched_getaffinity(0))


def inference_fps(*, xml: str, seconds: int) -> float:
    return run_benchmark_app(xml=Path(xml), device="CPU", seconds=seconds)


def decode_cost(*, clip: str, frames: int, input_size: tuple[int, int] = (448, 448)) -> DecodeCost:
    """Mean CPU cost per frame over `frames` frames after a short warm-up."""
    # cv2.resize would otherwise fan out to OpenCV's pool; thread_time sees only this thread.
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    capture = cv2.VideoCapture(clip, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not capture.isOpened():
        raise RuntimeError(f"cannot open {clip}")
    try:
        for _ in range(10):
            capture.grab()
        grab = bgr = resize = 0.0
        done = 0
        while done < frames:
            t0 = time.thread_time()
            if not capture.grab():
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            t1 = time.thread_time()
            ok, image = capture.retrieve()
            t2 = time.thread_time()
            if not ok:
                raise RuntimeError(f"{clip}: retrieve failed")
            cv2.resize(image, input_size, interpolation=cv2.INTER_LINEAR)
            t3 = time.thread_time()
            grab += t1 - t0
            bgr += t2 - t1
            resize += t3 - t2
            done += 1
    finally:
        capture.release()
        cv2.setNumThreads(previous)
    scale = 1000.0 / frames
    return DecodeCost(
        clip=clip, grab_ms=grab * scale, bgr_ms=bgr * scale, resize_ms=resize * scale,
        frames=frames,
    )  # fmt: skip


def live_decode_cost(*, urls: list[str], seconds: float, warmup_frames: int = 50) -> LiveDecodeCost:
    """Read every URL in a thread of its own for `seconds`, as the service's readers do."""
    # RTSP over TCP with open/read timeouts, like the service's readers (sources.reader).
    prefer_rtsp_over_tcp()
    params = [
        cv2.CAP_PROP_N_THREADS, 1,
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10_000,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, 10_000,
    ]  # fmt: skip
    costs: dict[str, tuple[float, float]] = {}
    errors: list[str] = []

    def read(url: str) -> None:
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        try:
            if not capture.isOpened():
                errors.append(f"cannot open {url}")
                return
            for _ in range(warmup_frames):
                capture.grab()
            cpu_start, wall_start = time.thread_time(), time.monotonic()
            frames = 0
            while time.monotonic() - wall_start < seconds:
                if not capture.grab():
                    errors.append(f"{url}: grab failed")
                    return
                frames += 1
            wall = time.monotonic() - wall_start
            costs[url] = ((time.thread_time() - cpu_start) * 1000.0 / frames, frames / wall)
        finally:
            capture.release()

    threads = [threading.Thread(target=read, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return LiveDecodeCost(
        streams=len(urls),
        grab_ms=sum(grab for grab, _ in costs.values()) / len(costs),
        fps=min(fps for _, fps in costs.values()),
    )
