"""What keeping a camera's main stream costs: demuxing it (the service's MainStreamReader into
its PacketRing) against decoding it, and the bytes the ring holds.

`python -m benchmarks.mainstream_cost [--cameras 4] [--pairs 2] [--seconds 20]` serves the
bench's 720p clip (H.264, 3.75 Mbit/s, 25 fps, a keyframe every 2 s) on one RTSP mount per
camera and runs, interleaved, `pairs` times each:

* demux: one `MainStreamReader` per camera with the default ring limits
  (config/mainstream.py), as the service runs it for a camera with `detect_url`;
* decode: one thread per camera decoding every frame of the same mount with PyAV, one
  decoder thread (as the service's readers decode), no colour conversion.

CPU is this process's (nothing else runs in it meanwhile; the RTSP server is another
process), per camera as a share of one core. Bytes held are the rings' sampled once a
second after the first `max_seconds`. Prints JSON and writes `results/mainstream/`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import av

from benchmarks.media import GOP, P720, Clips, start_rtsp
from edge_facedet.backoff import Backoff
from edge_facedet.config.mainstream import MainStreamConfig
from edge_facedet.sources.mainstream import MainStreamReader, MainStreamState
from edge_facedet.sources.packetring import PacketRing
from tests.support.paths import REPO

CACHE = REPO / "results" / "bench-cache"


class _Watcher:
    """Counts what a reader reports (MainStreamWatcher)."""

    def __init__(self) -> None:
        self.states: list[MainStreamState] = []
        self.reconnects = 0

    def state(self, camera_id: str, state: MainStreamState) -> None:
        self.states.append(state)

    def buffered(self, camera_id: str, *, bytes_held: int, packets_dropped: int) -> None:
        pass

    def reconnected(self, camera_id: str) -> None:
        self.reconnects += 1


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def demux(urls: list[str], *, seconds: float) -> dict[str, Any]:
    limits = MainStreamConfig()
    watcher = _Watcher()
    readers = [
        MainStreamReader(
            camera_id=f"cam{i}",
            url=url,
            display_url=url,
            ring=PacketRing(max_bytes=limits.max_bytes, max_seconds=limits.max_seconds),
            read_timeout_s=10.0,
            backoff=Backoff(base=0.5, cap=2.0),
            watcher=watcher,
        )
        for i, url in enumerate(urls)
    ]
    for reader in readers:
        reader.start()
    # The first max_seconds fill the rings; CPU is measured over the same span as the
    # decode arm, after it.
    time.sleep(limits.max_seconds)
    before, started = _cpu_s(), time.monotonic()
    held: list[int] = []
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        held += [reader.ring.stats().bytes_held for reader in readers]
    cores = (_cpu_s() - before) / (time.monotonic() - started)
    for reader in readers:
        reader.stop()
    for reader in readers:
        reader.join(5.0)
    return {
        "cores_per_camera": cores / len(urls),
        "bytes_held_median": statistics.median(held),
        "bytes_held_max": max(held),
        "reconnects": watcher.reconnects,
        "max_seconds": limits.max_seconds,
        "max_bytes": limits.max_bytes,
    }


def decode(urls: list[str], *, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    frames = [0] * len(urls)
    errors: list[str] = []

    def run(index: int, url: str) -> None:
        try:
            with av.open(url, options={"rtsp_transport": "tcp"}, timeout=10.0) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_count = 1
                for _ in container.decode(stream):
                    frames[index] += 1
                    if stop.is_set():
                        return
        except Exception as exc:  # noqa: BLE001 - reported in the result
            errors.append(f"{url}: {exc}")

    threads = [
        threading.Thread(target=run, args=(i, url), daemon=True) for i, url in enumerate(urls)
    ]
    for thread in threads:
        thread.start()
    time.sleep(MainStreamConfig().max_seconds)  # the same warm-up as the demux arm
    before, counted, started = _cpu_s(), sum(frames), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    cores, decoded = (_cpu_s() - before) / elapsed, sum(frames) - counted
    stop.set()
    for thread in threads:
        thread.join(5.0)
    return {
        "cores_per_camera": cores / len(urls),
        "frames_per_camera_s": decoded / elapsed / len(urls),
        "errors": errors,
    }


def measure(*, cameras: int, pairs: int, seconds: float) -> dict[str, Any]:
    clip = Clips(cache_dir=CACHE).long(profile=P720, seconds=seconds + 60)  # per arm, anew
    server = start_rtsp(mounts={f"main{i}": clip for i in range(cameras)})
    runs: list[dict[str, Any]] = []
    try:
        urls = [server.url(f"main{i}") for i in range(cameras)]
        for _ in range(pairs):
            for arm, run in (("demux", demux), ("decode", decode)):
                result = {"arm": arm, **run(urls, seconds=seconds)}
                result["load"] = os.getloadavg()[0]
                print(json.dumps(result), flush=True)
                runs.append(result)
    finally:
        server.kill()
    demux_cores = statistics.median(r["cores_per_camera"] for r in runs if r["arm"] == "demux")
    decode_cores = statistics.median(r["cores_per_camera"] for r in runs if r["arm"] == "decode")
    return {
        "stream": {"profile": P720.name, "bitrate": P720.bitrate, "gop_frames": GOP},
        "cameras": cameras,
        "runs": runs,
        "demux_cores_per_camera": demux_cores,
        "decode_cores_per_camera": decode_cores,
        "demux_over_decode": demux_cores / decode_cores,
        "bytes_held_per_camera_median": statistics.median(
            r["bytes_held_median"] for r in runs if r["arm"] == "demux"
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mainstream")
    args = parser.parse_args()
    report = measure(cameras=args.cameras, pairs=args.pairs, seconds=args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"mainstream-cost-{time.strftime('%Y%m%dT%H%M%S')}.json"
    (args.out / name).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
