"""The benchmark suite's one entry point: `python -m benchmarks.run` or `edge-facedet bench`.

Owns the scenarios, their order and parameters, the searches, and the output: every run writes
`results/bench-<timestamp>/{results.md,results.json,chart.png}`; `--docs` also rewrites
`docs/benchmarks.md` from it (a full run, not `--quick`). Scenarios, side by side:

* ceilings: `benchmark_app` (inference) and single-thread decode costs (grab / BGR / resize)
  of the 720p, 1080p and 640x360 clips; from them the combined ceiling
  1 / (1/decode + 1/inference) and the predicted capacity
  cores / (25 x grab + 5 x (bgr + infer)) of 720p@25 cameras at detect_fps 5.
* naive: the hand-written baseline (benchmarks/naive.py) at 1, 4, 8, 16 cameras.
* throughput: the service at 1, 4, 8, 16 file cameras read as fast as the detector takes
  their frames, every frame inferred (see `Suite.throughput`).
* capacity: the most 720p@25 RTSP cameras at detect_fps 5 with every camera >= 4.5
  detections/s over the window, for the service and for the naive baseline.
* latency: capture -> MQTT receipt p50/p95/p99 at 50% and 80% of the service's capacity,
  and at 80% with `reader_nice: 10`.
* memory: 16 RTSP cameras: peak RSS (VmHWM) and RSS growth (10 minutes with `--long`).
* substream: capacity again with `detect_url` on a 640x360 substream beside the 720p `url`.
* decoders: the same 720p RTSP cameras read with each decoder setting (OpenCV, PyAV, PyAV
  skipping the loop filter) at a fixed count, PyAV's keyframes_only at detect_fps 0.5 beside
  OpenCV, and capacity again with PyAV skipping the loop filter.
* tracking: throughput's 8 file cameras with tracking off against tracking, events and
  `crop` snapshots (with a `snapshot_dir`) on, interleaved in pairs: the ratio of
  detections/s per pair, and the events and snapshots the service counted.
* memory_snapshots: the memory scenario's 16 RTSP cameras with snapshots off and `crop`,
  interleaved: peak RSS of each.
* volume: MQTT messages per camera-minute on real clips played in real time at detect_fps 5:
  faces messages under `on_change` and `every_frame` against track events.
* accuracy: what each way of reading a stream loses (decoders, skip_loop_filter,
  keyframes_only, the 640x360 substream, motion gating) against the detector on every frame
  of the shared clips (benchmarks/accuracy.py); no service, not load-sensitive.
* gating: motion gating's gain on 640x360 RTSP substreams of a fixed room with people passing
  10 s a minute: gated against ungated at one camera count, interleaved in pairs, and the
  CPU per camera of 16 idle cameras (a still scene) gated against ungated.

Figures measured more than once are reported as best and median; the load average is recorded
before every scenario, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the package and the test support code
    sys.path.insert(0, str(REPO))

from benchmarks import ceilings, slowclients  # noqa: E402
from benchmarks.media import P360, P720, P1080, Clips, Scene, start_rtsp  # noqa: E402
from benchmarks.service_run import Camera, Observed, ServiceResult, run_service  # noqa: E402
from tests.support.paths import MEDIA, MODEL_ROOT  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SCENARIOS = (
    "ceilings", "naive", "throughput", "capacity", "latency", "memory", "substream", "decoders",
    "slowclients", "tracking", "memory_snapshots", "volume", "accuracy", "gating",
)  # fmt: skip
RUN_METADATA = ("machine", "started", "load", "settings", "finished", "reused_from")
"""Keys of results.json that describe the run rather than hold a scenario's results."""
CAMERA_COUNTS = (1, 4, 8, 16)
STREAM_FPS = 25
DETECT_FPS = 5.0
PASS_FPS = 4.5
KEYFRAME_FPS = 0.5  # the clips' GOP is 50 frames at 25 fps
DECODERS: dict[str, dict[str, Any]] = {
    "opencv": {"decoder": "opencv"},
    "pyav": {"decoder": "pyav"},
    "pyav, skip_loop_filter": {"decoder": "pyav", "skip_loop_filter": True},
}
THROUGHPUT_DEFAULTS: dict[str, Any] = {"motion": {"enabled": False}}
"""Every frame inferred, as the naive loop does: motion gating (on by default) off."""
MEMORY_CAMERAS = 16
TRACKING_CAMERAS = 8
# The two arms of the tracking scenario, as `defaults` (tracking is on by default).
TRACKING_ARMS: dict[str, dict[str, Any]] = {
    "off": {"tracking": {"enabled": False}},
    "on": {"snapshots": {"mode": "crop"}},
}
SNAPSHOT_MODES = ("off", "crop")
VOLUME_CLIPS = {
    "event_faces": MEDIA / "videos" / "openmpf_video_01_event_faces_640x480.mp4",
    "hikers": MEDIA / "videos" / "openmpf_video_02_hikers_walking_640x480.mp4",
    "one_by_one": MEDIA / "sample-videos" / "one-by-one-person-detection.mp4",
}
VOLUME_POLICIES = ("on_change", "every_frame")
ROOM = MEDIA / "sample-videos" / "one-by-one-person-detection.mp4"
ACCURACY_CLIPS = (*sorted((MEDIA / "videos").glob("*.mp4")), ROOM)
ROOM_EMPTY_S = 5.0
"""The room clip's first seconds, before the first person walks in (at 6 s)."""
# People walk through the room from 6 s on; one camera-minute shows 10 s of them.
PASSING_SCENE = Scene(source=ROOM, empty_s=ROOM_EMPTY_S, people_from_s=6.0, people_s=10.0)
IDLE_SCENE = Scene(source=ROOM, empty_s=ROOM_EMPTY_S)
GATING_ARMS: dict[str, dict[str, Any]] = {
    "ungated": {"motion": {"enabled": False}},
    "gated": {"motion": {"enabled": True}},
}
GATING_OFFSETS_S = (0, 10, 20, 30, 40, 50)
"""Where in the scene's minute each camera starts (cycled): a sixth of the cameras at a time
see people, as independent cameras would, instead of all at once."""
IDLE_CAMERAS = 16
RECHECK_S = 2.0
XML = MODEL_ROOT / "intel" / "face-detection-0204" / "FP16-INT8" / "face-detection-0204.xml"


class Bench:
    """One invocation: settings, inputs, and the results as they accumulate."""

    def __init__(self, *, args: argparse.Namespace) -> None:
        self.quick: bool = args.quick
        self.long: bool = args.long
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.out: Path = (args.out or REPO / "results") / f"bench-{stamp}"
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = REPO / "results" / "bench-cache"
        self.clips = Clips(cache_dir=self.cache)
        self.work = Path(tempfile.mkdtemp(prefix="bench-"))
        self.cores = ceilings.cores()
        self.repeats: int = args.repeats or (1 if self.quick else 2)
        self.capacity_s: float = args.capacity_seconds or (20.0 if self.quick else 60.0)
        self.gating_cameras: int | None = args.gating_cameras
        self.results: dict[str, Any] = {"machine": machine(), "started": stamp, "load": {}}
        if args.reuse is not None:
            # Scenarios not run now are taken from an earlier run (e.g. its ceilings).
            earlier = json.loads(args.reuse.read_text())
            # Every result, not a list of them: a list missed `slowclients`, and a rerun's
            # page lost its section. The earlier run's own metadata stays behind.
            for key, value in earlier.items():
                if key not in RUN_METADATA:
                    self.results[key] = value
            self.results["reused_from"] = str(args.reuse)
        self._runs = 0

    # -- helpers -----------------------------------------------------------------------------

    def note_load(self, scenario: str) -> None:
        load = os.getloadavg()
        self.results["load"][scenario] = [round(x, 2) for x in load]
        print(f"== {scenario} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))

    def service(
        self, *, cameras: list[Camera], detect_fps: float, seconds: float, warmup_s: float = 5.0,
        rss_interval_s: float = 1.0, neighbours: dict[str, int] | None = None,
        defaults: dict[str, Any] | None = None, observed: Observed | None = None,
    ) -> ServiceResult:  # fmt: skip
        self._runs += 1
        return run_service(
            cameras=cameras, detect_fps=detect_fps, warmup_s=warmup_s, seconds=seconds,
            workdir=self.work / f"service-{self._runs}", cache_dir=self.cache / "openvino",
            rss_interval_s=rss_interval_s, neighbours=neighbours, defaults_overrides=defaults,
            observed=observed,
        )  # fmt: skip

    def rtsp_cameras(
        self, *, count: int, seconds: float, substream: bool = False
    ) -> tuple[Any, list[Camera]]:
        """An RTSP server with one mount per camera (720p, plus a 360p one with `substream`)."""
        main = self.clips.long(profile=P720, seconds=seconds)
        mounts = {f"main{i}": main for i in range(count)}
        if substream:
            sub = self.clips.long(profile=P360, seconds=seconds)
            mounts.update({f"sub{i}": sub for i in range(count)})
        server = start_rtsp(mounts=mounts)
        cameras = [
            Camera(
                id=f"cam{i}",
                url=server.url(f"main{i}"),
                detect_url=server.url(f"sub{i}") if substream else None,
            )
            for i in range(count)
        ]
        return server, cameras

    # -- scenarios -----------------------------------------------------------------------------

    def ceilings(self) -> None:
        app_s = 5 if self.quick else 15
        runs = [ceilings.inference_fps(xml=str(XML), seconds=app_s) for _ in range(self.repeats)]
        frames = 120 if self.quick else 400
        decode: dict[str, Any] = {}
        for profile in (P720, P1080, P360):
            clip = str(self.clips.base(profile=profile))
            costs = [ceilings.decode_cost(clip=clip, frames=frames) for _ in range(self.repeats)]
            decode[profile.name] = {
                part: summary([getattr(c, f"{part}_ms") for c in costs], lower_is_better=True)
                for part in ("grab", "bgr", "resize")
            }
        inference = summary(runs)
        infer_ms = self.cores * 1000.0 / inference["best"]
        result: dict[str, Any] = {"inference_fps": inference, "decode_ms": decode}
        for name, costs in decode.items():
            grab, bgr = costs["grab"]["best"], costs["bgr"]["best"]
            decode_fps = self.cores * 1000.0 / (grab + bgr)
            result[name] = {
                "decode_fps": decode_fps,
                "combined_fps": 1.0 / (1.0 / decode_fps + 1.0 / inference["best"]),
                "predicted_capacity": self.cores
                * 1000.0
                / (STREAM_FPS * grab + DETECT_FPS * (bgr + infer_ms)),
            }
        result["infer_ms_per_frame"] = infer_ms
        result["live_720p"] = self._live_decode(
            streams=max(1, round(result["720p"]["predicted_capacity"])),
            bgr_ms=decode["720p"]["bgr"]["best"],
            infer_ms=infer_ms,
        )
        self.results["ceilings"] = result
        print(json.dumps(result, indent=1, default=str), flush=True)

    def _live_decode(self, *, streams: int, bgr_ms: float, infer_ms: float) -> dict[str, Any]:
        """Grab cost of `streams` live 720p RTSP cameras read in real time, and the capacity
        the prediction gives with it (as many streams as the file-based prediction fits)."""
        seconds = 8.0 if self.quick else 20.0
        server, cameras = self.rtsp_cameras(count=streams, seconds=seconds + 30)
        try:
            live = ceilings.live_decode_cost(urls=[c.url for c in cameras], seconds=seconds)
        finally:
            server.kill()
        return {
            "streams": live.streams,
            "grab_ms": live.grab_ms,
            "fps": live.fps,
            "predicted_capacity": self.cores
            * 1000.0
            / (STREAM_FPS * live.grab_ms + DETECT_FPS * (bgr_ms + infer_ms)),
        }

    def _ceiling(self) -> dict[str, Any]:
        if "ceilings" not in self.results:
            self.ceilings()
        ceiling: dict[str, Any] = self.results["ceilings"]
        return ceiling

    def naive(self) -> None:
        clip = str(self.clips.base(profile=P720))
        seconds = 6.0 if self.quick else 12.0
        rows = {}
        for count in CAMERA_COUNTS:
            outs = [
                naive_run(urls=[clip] * count, every=1, loop_file=True, seconds=seconds)
                for _ in range(self.repeats)
            ]
            rows[str(count)] = {
                **summary([float(out["total_fps"]) for out in outs]),
                "fps_per_core": max(
                    float(out["total_fps"]) / max(float(out["cpu_cores_used"]), 1e-9)
                    for out in outs
                ),
            }
            print(f"naive {count} cameras: {rows[str(count)]}", flush=True)
        self.results["naive"] = rows

    def throughput(self) -> None:
        """Every frame inferred, as fast as possible: N file cameras with `realtime: false`.

        A lossless file camera reads its next frame only when the detector has taken the
        previous one (the slot is empty), and with detect_fps = the file's 25 fps every frame
        read is converted, resized and inferred; none is skipped or dropped. This is the
        pull model of the naive loop, and of a user analysing recordings.
        """
        seconds = 6.0 if self.quick else 12.0
        rows: dict[str, Any] = {}
        clip = self.clips.base(profile=P720)
        for count in CAMERA_COUNTS:
            fps = float(STREAM_FPS)
            cameras = [
                Camera(id=f"f{i}", url=str(clip), loop=True, realtime=False) for i in range(count)
            ]
            runs = [
                self.service(
                    cameras=cameras, detect_fps=fps, seconds=seconds, defaults=THROUGHPUT_DEFAULTS
                )
                for _ in range(self.repeats)
            ]
            rows[str(count)] = {
                **summary([r.total_fps for r in runs]),
                "cpu_cores_used": max(r.cpu_s / r.seconds for r in runs),
                # Frames per CPU-second: less sensitive than frames/s to a shared machine.
                "fps_per_core": max(r.total_fps * r.seconds / max(r.cpu_s, 1e-9) for r in runs),
                "p99_ms": min(r.percentile(99) for r in runs),
            }
            print(f"service {count} cameras: {rows[str(count)]}", flush=True)
            self.save()
        self.results["throughput"] = rows

    def _search(
        self, *, name: str, start: int, measure: Callable[[int], tuple[bool, dict[str, Any]]],
        step: int = 1,
    ) -> int:  # fmt: skip
        """Largest passing camera count near `start`: up while passing, else down, then up
        (upwards by `step`: large counts take minutes a step)."""
        steps: list[dict[str, Any]] = []
        outcome: dict[int, bool] = {}

        def check(count: int) -> bool:
            if count not in outcome:
                passed, detail = measure(count)
                outcome[count] = passed
                steps.append({"cameras": count, "passed": passed, **detail})
                print(f"{name} {count} cameras: {steps[-1]}", flush=True)
                self.results[name] = {"steps": steps}
                self.save()
            return outcome[count]

        count = max(1, start)
        if not check(count):
            while count > 1:
                # Coarse steps down (each step is a minute or more), then refined upwards.
                count = max(1, count - max(2, round(0.15 * count)))
                if check(count):
                    break
        # Refine upwards; a count already seen failing ends it from the cache.
        while outcome.get(count, False) and check(count + step):
            count += step
        best = max((c for c, ok in outcome.items() if ok), default=0)
        self.results[name] = {"capacity": best, "steps": steps}
        return best

    def _service_capacity_step(
        self, count: int, *, substream: bool = False, detect_fps: float = DETECT_FPS,
        pass_fps: float = PASS_FPS, defaults: dict[str, Any] | None = None,
    ) -> tuple[bool, dict[str, Any]]:  # fmt: skip
        warmup = 8.0
        server, cameras = self.rtsp_cameras(
            count=count, seconds=self.capacity_s + warmup + 120, substream=substream
        )
        try:
            result = self.service(
                cameras=cameras, detect_fps=detect_fps, seconds=self.capacity_s, warmup_s=warmup,
                neighbours={"rtsp_server": server.pid}, defaults=defaults,
            )  # fmt: skip
        finally:
            server.kill()
        readers_ms = 1000.0 * result.thread_cores.get("readers", math.nan) / count
        detail = {
            "total_fps": round(result.total_fps, 1),
            "min_camera_fps": round(result.min_camera_fps, 2),
            "cpu_cores_used": round(result.cpu_s / result.seconds, 2),
            "neighbour_cores": result.neighbour_cores,
            "thread_cores": result.thread_cores,
            "p99_ms": round(result.percentile(99), 1),
            "stale_per_s": round(result.stale_per_s, 1),
            "grabbed_per_camera_s": round(result.grabbed_per_camera_s, 1),
            "peak_rss_mb": round(result.peak_rss_mb, 1),
            "all_started": result.all_started,
            "reader_ms_per_camera_s": round(readers_ms, 1),
        }
        return result.min_camera_fps >= pass_fps, detail

    def capacity(self) -> None:
        predicted = float(self._ceiling()[P720.name]["predicted_capacity"])
        self._search(
            name="capacity",
            start=math.floor(predicted),
            measure=lambda n: self._service_capacity_step(n, substream=False),
        )
        if "naive_capacity" in self.results:  # reused from an earlier run (--reuse)
            return
        naive_s = 12.0 if self.quick else 30.0

        def naive_step(count: int) -> tuple[bool, dict[str, Any]]:
            server, cameras = self.rtsp_cameras(count=count, seconds=naive_s + 90)
            try:
                out = naive_run(
                    urls=[c.url for c in cameras],
                    every=round(STREAM_FPS / DETECT_FPS),
                    loop_file=False,
                    seconds=naive_s,
                )
            finally:
                server.kill()
            rates = [float(r) for r in out["per_camera"]]
            detail = {"total_fps": round(sum(rates), 1), "min_camera_fps": round(min(rates), 2)}
            return min(rates) >= PASS_FPS, detail

        costs = self._ceiling()["decode_ms"][P720.name]
        infer_ms = float(self._ceiling()["infer_ms_per_frame"])
        grab, bgr = costs["grab"]["best"], costs["bgr"]["best"]
        # The naive loop converts every frame it reads, not only those it infers.
        naive_predicted = self.cores * 1000.0 / (STREAM_FPS * (grab + bgr) + DETECT_FPS * infer_ms)
        self._search(name="naive_capacity", start=math.floor(naive_predicted), measure=naive_step)

    def latency(self) -> None:
        capacity = int(self.results.get("capacity", {}).get("capacity") or 0)
        if not capacity:
            capacity = math.floor(float(self._ceiling()[P720.name]["predicted_capacity"]))
        seconds = 12.0 if self.quick else 30.0
        rows = {}
        # The last row: the same 80 % with inference favoured over decoding, the setting that
        # trades decoding headroom for latency (docs/benchmarks.md).
        loads = (
            ("50%", 0.5, None),
            ("80%", 0.8, None),
            ("80%, reader_nice 10", 0.8, {"reader_nice": 10}),
        )
        for label, share, defaults in loads:
            count = max(1, round(share * capacity))
            server, cameras = self.rtsp_cameras(count=count, seconds=seconds + 90)
            try:
                result = self.service(
                    cameras=cameras, detect_fps=DETECT_FPS, seconds=seconds, defaults=defaults
                )
            finally:
                server.kill()
            rows[label] = {
                "cameras": count,
                "messages": len(result.latencies_ms),
                **{f"p{q}_ms": round(result.percentile(q), 1) for q in (50, 95, 99)},
                "internal_p99_ms": round(result.percentile(99, internal=True), 1),
                "stale_per_s": round(result.stale_per_s, 1),
                "min_camera_fps": round(result.min_camera_fps, 2),
            }
            print(f"latency {label}: {rows[label]}", flush=True)
        self.results["latency"] = {"capacity": capacity, "rows": rows}

    def memory(self) -> None:
        seconds = 600.0 if self.long else (60.0 if self.quick else 120.0)
        self.results["memory"] = self._memory_run(seconds=seconds)
        print(f"memory: { {k: v for k, v in self.results['memory'].items() if k != 'samples'} }")

    def _memory_run(
        self, *, seconds: float, defaults: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """16 RTSP cameras at detect_fps 5 for `seconds`: peak RSS, RSS growth, the samples."""
        server, cameras = self.rtsp_cameras(count=MEMORY_CAMERAS, seconds=seconds + 90)
        try:
            result = self.service(
                cameras=cameras, detect_fps=DETECT_FPS, seconds=seconds, warmup_s=5.0,
                rss_interval_s=2.0, defaults=defaults,
            )  # fmt: skip
        finally:
            server.kill()
        samples = result.rss
        end_t = samples[-1][0] if samples else 0.0
        # Baseline a tenth into the window (buffers, pools and caches fill up first).
        base_from = result.window_offset_s + seconds / 10
        base = [rss for t, rss in samples if base_from <= t < base_from + 30]
        last = [rss for t, rss in samples if t >= end_t - 30]
        start_mb = statistics.median(base) if base else float("nan")
        end_mb = statistics.median(last) if last else float("nan")
        return {
            "cameras": MEMORY_CAMERAS,
            "seconds": seconds,
            "peak_rss_mb": round(result.peak_rss_mb, 1),
            "rss_start_mb": round(start_mb, 1),
            "rss_end_mb": round(end_mb, 1),
            "growth_pct": round(100.0 * (end_mb - start_mb) / start_mb, 2),
            "min_camera_fps": round(result.min_camera_fps, 2),
            "cpu_cores_used": round(result.cpu_s / result.seconds, 2),
            "load_1min": round(os.getloadavg()[0], 2),
            "track_counters": result.track_counters,
            "samples": [(round(t, 1), round(rss, 1)) for t, rss in samples],
        }

    def substream(self) -> None:
        ceiling = self._ceiling()
        predicted = float(ceiling[P360.name]["predicted_capacity"])
        self._search(
            name="substream_capacity",
            start=math.floor(0.9 * predicted),
            measure=lambda n: self._service_capacity_step(n, substream=True),
        )

    def slowclients(self) -> None:
        """1,000 slow and 39 large-header HTTP clients against the service (slowclients.py)."""
        self.results["slowclients"] = slowclients.run(
            workdir=self.work / "slowclients",
            cache_dir=self.cache / "openvino",
            phase_s=10.0 if self.quick else 15.0,
        )
        self.save()

    def decoders(self) -> None:
        """Each decoder setting on the same live cameras, then capacity with the cheapest."""
        capacity = int(self.results.get("capacity", {}).get("capacity") or 0)
        if not capacity:
            capacity = math.floor(float(self._ceiling()[P720.name]["predicted_capacity"]))
        count = max(1, round(0.8 * capacity))
        rows: list[dict[str, Any]] = []
        for name, settings in DECODERS.items():
            passed, detail = self._service_capacity_step(count, defaults=settings)
            rows.append({"setting": name, "cameras": count, "detect_fps": DETECT_FPS,
                         "passed": passed, **detail})  # fmt: skip
            print(f"decoders {name}: {rows[-1]}", flush=True)
        # At the keyframe rate only keyframes need decoding: OpenCV decodes every frame and
        # detects one in 50; keyframes_only (detect_fps above the keyframe rate, so every
        # keyframe is due) decodes and detects the keyframes only.
        for name, settings, detect_fps in (
            ("opencv", DECODERS["opencv"], KEYFRAME_FPS),
            ("pyav, keyframes_only", {"decoder": "pyav", "keyframes_only": True}, DETECT_FPS),
        ):
            passed, detail = self._service_capacity_step(
                MEMORY_CAMERAS, detect_fps=detect_fps, pass_fps=0.9 * KEYFRAME_FPS,
                defaults=settings,
            )  # fmt: skip
            rows.append({"setting": name, "cameras": MEMORY_CAMERAS, "detect_fps": detect_fps,
                         "passed": passed, **detail})  # fmt: skip
            print(f"decoders {name} at {detect_fps}/s: {rows[-1]}", flush=True)
        self.results["decoders"] = {"cameras": count, "rows": rows}
        self.save()
        cheapest = DECODERS["pyav, skip_loop_filter"]
        self._search(
            name="decoder_capacity",
            start=capacity + 1,
            measure=lambda n: self._service_capacity_step(n, defaults=cheapest),
        )

    def tracking(self) -> None:
        """What tracks, events and snapshots cost at full speed: throughput's 8 file cameras
        (`realtime: false`, every frame inferred) with tracking off, then with tracking and
        `crop` snapshots on (files in a `snapshot_dir` too), interleaved in pairs so a shared
        machine's drift falls on both arms alike; each pair gives one ratio."""
        seconds = 12.0
        pairs = 4 if self.quick else 6
        clip = str(self.clips.base(profile=P720))
        cameras = [
            Camera(id=f"f{i}", url=clip, loop=True, realtime=False) for i in range(TRACKING_CAMERAS)
        ]
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in TRACKING_ARMS}
        for _ in range(pairs):
            for arm, defaults in TRACKING_ARMS.items():
                result = self.service(
                    cameras=cameras, detect_fps=float(STREAM_FPS), seconds=seconds,
                    defaults=defaults, observed=Observed(snapshot_dir=arm == "on"),
                )  # fmt: skip
                runs[arm].append(tracking_run(result))
                print(f"tracking {arm}: {runs[arm][-1]}", flush=True)
            self.results["tracking"] = tracking_summary(
                runs=runs, cameras=TRACKING_CAMERAS, seconds=seconds
            )
            self.save()

    def memory_snapshots(self) -> None:
        """Peak RSS with snapshots off and `crop` on the memory scenario's 16 RTSP cameras,
        interleaved (off, crop, off, crop, ...)."""
        seconds = 90.0
        pairs = 1 if self.quick else 2
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in SNAPSHOT_MODES}
        for _ in range(pairs):
            for mode in SNAPSHOT_MODES:
                run = self._memory_run(seconds=seconds, defaults={"snapshots": {"mode": mode}})
                runs[mode].append(run)
                shown = {k: v for k, v in run.items() if k != "samples"}
                print(f"memory_snapshots {mode}: {shown}", flush=True)
                self.results["memory_snapshots"] = {
                    "cameras": MEMORY_CAMERAS, "seconds": seconds, "runs": runs,
                }  # fmt: skip
                self.save()

    def accuracy(self) -> None:
        """Every way of reading each shared clip against the detector on its every frame."""
        from benchmarks import accuracy  # noqa: PLC0415 - the detector loads only if run

        detector = accuracy.FrameDetector(model_xml=XML, cache_dir=self.cache / "openvino")
        clips: list[dict[str, Any]] = []
        try:
            for clip in ACCURACY_CLIPS:
                substream = self.clips.substream_of(clip=clip)
                clips.append(
                    accuracy.evaluate_clip(clip=clip, substream=substream, detector=detector)
                )
                print(f"accuracy {clip.name}: {accuracy.summarise(clips[-1:])}", flush=True)
        finally:
            detector.close()
        self.results["accuracy"] = {
            "detect_fps": DETECT_FPS,
            "threshold": accuracy.THRESHOLD,
            "match_iou": accuracy.MATCH_IOU,
            "summary": accuracy.summarise(clips),
            "clips": clips,
            "false_motion": accuracy.false_motion(clip=ROOM, until_s=ROOM_EMPTY_S),
        }

    def gating(self) -> None:
        """Motion gating's capacity against ungated, in one run, on 640x360 substreams of a
        room people pass through: the ungated capacity, the gated capacity searched from twice
        that, the gated p99 latency at 80 % of the gated capacity; then 16 cameras on the
        still room, gated against ungated interleaved: CPU per camera."""
        seconds = 20.0 if self.quick else 40.0
        results: dict[str, Any] = {"seconds": seconds}
        self.results["gating"] = results
        start = self.gating_cameras or math.floor(
            0.9 * float(self._ceiling()[P360.name]["predicted_capacity"])
        )

        def step(arm: str) -> Callable[[int], tuple[bool, dict[str, Any]]]:
            def measure(count: int) -> tuple[bool, dict[str, Any]]:
                run = self._gating_run(
                    count=count, scene=PASSING_SCENE, seconds=seconds, defaults=GATING_ARMS[arm]
                )
                return bool(run["on_time"]), run

            return measure

        ungated = self._search(name="gating_ungated", start=start, measure=step("ungated"))
        results["ungated"] = self.results.pop("gating_ungated")
        self.results["gating"] = results
        gated = self._search(
            name="gating_gated", start=2 * ungated, measure=step("gated"),
            step=max(2, round(0.1 * ungated)),
        )  # fmt: skip
        results["gated"] = self.results.pop("gating_gated")
        self.results["gating"] = results
        results["ratio"] = round(gated / ungated, 2) if ungated else None
        print(f"gating capacity: ungated {ungated}, gated {gated}", flush=True)
        if gated:
            count = max(1, round(0.8 * gated))
            results["latency"] = {
                "cameras": count,
                **self._gating_run(
                    count=count, scene=PASSING_SCENE, seconds=seconds,
                    defaults=GATING_ARMS["gated"],
                ),
            }  # fmt: skip
            print(f"gating latency at 80 %: {results['latency']}", flush=True)
        self.save()
        idle: dict[str, list[dict[str, Any]]] = {arm: [] for arm in GATING_ARMS}
        for _ in range(1 if self.quick else 2):
            for arm, defaults in GATING_ARMS.items():
                idle[arm].append(
                    self._gating_run(count=IDLE_CAMERAS, scene=IDLE_SCENE, seconds=seconds,
                                     defaults=defaults)
                )  # fmt: skip
                print(f"gating idle {arm}: {idle[arm][-1]}", flush=True)
                results["idle"] = {"cameras": IDLE_CAMERAS, "runs": idle}
                self.save()

    def _gating_run(
        self, *, count: int, scene: Scene, seconds: float, defaults: dict[str, Any]
    ) -> dict[str, Any]:
        """One run of `count` substream cameras showing `scene`, each from its own offset."""
        warmup = 8.0
        clip = self.clips.scene(scene=scene)
        length = seconds + warmup + 2.0 * count + 60.0  # opens are serialised, ~1 s each
        offsets = [GATING_OFFSETS_S[i % len(GATING_OFFSETS_S)] for i in range(count)]
        mounts = {
            f"sub{i}": self.clips.repeated(clip=clip, seconds=length, offset_s=offset)
            for i, offset in enumerate(offsets)
        }
        server = start_rtsp(mounts=mounts)
        cameras = [Camera(id=f"cam{i}", url=server.url(f"sub{i}")) for i in range(count)]
        try:
            result = self.service(
                cameras=cameras, detect_fps=DETECT_FPS, seconds=seconds, warmup_s=warmup,
                neighbours={"rtsp_server": server.pid}, defaults=defaults,
            )  # fmt: skip
        finally:
            server.kill()
        return gating_run(result=result, gated=bool(defaults["motion"]["enabled"]))

    def volume(self) -> None:
        """MQTT messages per camera-minute: each clip plays (looping, in real time, at
        detect_fps 5) on one camera per publish policy, all in one service, with the
        subscriber counting faces messages and track events."""
        seconds = 60.0
        cameras = [
            Camera(
                id=f"{name}-{policy}",
                url=str(path),
                loop=True,
                settings={"publish": {"policy": policy}},
            )
            for name, path in VOLUME_CLIPS.items()
            for policy in VOLUME_POLICIES
        ]
        result = self.service(
            cameras=cameras, detect_fps=DETECT_FPS, seconds=seconds, warmup_s=2.0,
            observed=Observed(kinds=("faces", "events")),
        )  # fmt: skip
        self.results["volume"] = volume_rows(result=result)
        print(f"volume: {self.results['volume']}", flush=True)


def gating_run(*, result: ServiceResult, gated: bool) -> dict[str, Any]:
    """One gating run's figures and whether every camera was on time.

    Ungated, on time is the capacity scenario's rule (every camera >= 4.5 detections/s).
    Gated, a camera publishes only the frames it sends, so on time is: no due frame skipped
    as stale, every stream read at its full rate, every camera detected at least at about
    the recheck rate, and at least 0.9 of the frames the gate sent detected (the rest were
    dropped waiting for the detector, as the ungated rule allows 4.5 of 5); the p99
    capture-to-receipt latency is recorded beside it.
    """
    run = {
        "gated": gated,
        "total_fps": round(result.total_fps, 1),
        "min_camera_fps": round(result.min_camera_fps, 2),
        "cpu_cores_used": round(result.cpu_s / result.seconds, 3),
        "cpu_ms_per_camera_s": round(1000.0 * result.cpu_s / result.seconds / result.cameras, 1),
        "thread_cores": result.thread_cores,
        "neighbour_cores": result.neighbour_cores,
        "stale_per_s": round(result.stale_per_s, 2),
        "grabbed_per_camera_s": round(result.grabbed_per_camera_s, 1),
        "gated_share": _share(result.frame_counts, "gated", ("gated", "inferred", "dropped")),
        "detected_of_sent": _share(result.frame_counts, "inferred", ("inferred", "dropped")),
        "p99_ms": round(result.percentile(99), 1),
        "internal_p99_ms": round(result.percentile(99, internal=True), 1),
        "all_started": result.all_started,
        "load_1min": round(os.getloadavg()[0], 2),
    }
    return {**run, "on_time": gating_on_time(run)}


def _share(counts: dict[str, float], part: str, whole: tuple[str, ...]) -> float | None:
    total = sum(counts.get(key, 0.0) for key in whole)
    return round(counts.get(part, 0.0) / total, 3) if total else None


def gating_on_time(run: dict[str, Any]) -> bool:
    """Whether every camera of a gating run was on time (`gating_run` says what that is)."""
    if not run["all_started"]:
        return False
    if not run["gated"]:
        return bool(run["min_camera_fps"] >= PASS_FPS)
    # A still camera's rechecks come at the first due frame `recheck_interval_s` after the
    # last one sent, up to a detect period later: a rate a little under 1 / interval.
    return bool(
        run["stale_per_s"] < 0.1
        and run["grabbed_per_camera_s"] >= 0.95 * STREAM_FPS
        and run["min_camera_fps"] >= 0.8 / RECHECK_S
        # The frames the gate let through (motion, open tracks, rechecks) detected as the
        # ungated rule asks of every due frame (4.5 of 5): none of them may wait their turn
        # out and be replaced by the next.
        and (run.get("detected_of_sent") or 0.0) >= PASS_FPS / DETECT_FPS
    )


def tracking_run(result: ServiceResult) -> dict[str, Any]:
    """One arm's run of the tracking scenario: speed, CPU, and the track counters."""
    return {
        "total_fps": round(result.total_fps, 2),
        "cpu_cores_used": round(result.cpu_s / result.seconds, 3),
        "fps_per_core": round(result.total_fps * result.seconds / max(result.cpu_s, 1e-9), 2),
        "event_loop_cores": result.thread_cores.get("event_loop"),
        "seconds": round(result.seconds, 2),
        # The 1-minute load average as the window ended: how crowded the machine was.
        "load_1min": round(os.getloadavg()[0], 2),
        "all_started": result.all_started,
        "window": result.track_counters,
        "totals": result.track_totals,
        "snapshot_files": result.snapshot_files,
    }


def tracking_summary(
    *, runs: dict[str, list[dict[str, Any]]], cameras: int, seconds: float
) -> dict[str, Any]:
    """The pairs' ratios on/off of detections/s (median and spread), and each arm's figures.

    Also the ratio of detections per CPU-second: where other tenants take a varying share of
    the CPU, detections/s follows that share, and work per CPU-second is the steadier figure.
    """
    pairs = list(zip(runs["off"], runs["on"], strict=False))
    valid = [(off, on) for off, on in pairs if _counted(off) and _counted(on)]
    ratios = [on["total_fps"] / off["total_fps"] for off, on in valid]
    per_core = [on["fps_per_core"] / off["fps_per_core"] for off, on in valid]
    return {
        "cameras": cameras,
        "seconds": seconds,
        "pairs": len(ratios),
        "pairs_left_out": len(pairs) - len(valid),
        "ratios": [round(r, 4) for r in ratios],
        "ratio": spread(ratios),
        "per_core_ratios": [round(r, 4) for r in per_core],
        "per_core_ratio": spread(per_core),
        # Each arm over the pairs counted, so both arms describe the same windows.
        "arms": {
            arm: {
                key: spread([pair[index][key] for pair in valid])
                for key in ("total_fps", "fps_per_core", "cpu_cores_used")
            }
            for index, arm in enumerate(("off", "on"))
            if valid
        },
        "runs": runs,
    }


def _counted(run: dict[str, Any]) -> bool:
    """Whether a run's window counted anything: every camera had published before it, and
    faces messages arrived in it (a run the subscriber heard nothing from has no speed)."""
    return bool(run.get("all_started", True)) and run["total_fps"] > 0 and run["fps_per_core"] > 0


def volume_rows(*, result: ServiceResult) -> dict[str, Any]:
    """Per clip: faces messages per minute under each policy, track events per minute (from
    each policy's camera: the same clip, so nearly the same tracks) and by type."""
    minutes = result.seconds / 60.0
    rows: dict[str, Any] = {}
    for name, path in VOLUME_CLIPS.items():
        row: dict[str, Any] = {"clip": path.name, "clip_seconds": clip_seconds(path)}
        for policy in VOLUME_POLICIES:
            camera_id = f"{name}-{policy}"
            types = result.event_types.get(camera_id, {})
            row[policy] = {
                "faces_per_min": round(result.messages["faces"][camera_id] / minutes, 1),
                "events_per_min": round(result.messages["events"][camera_id] / minutes, 1),
                "events_by_type_per_min": {k: round(v / minutes, 1) for k, v in types.items()},
            }
        rows[name] = row
    return {"seconds": round(result.seconds, 1), "detect_fps": DETECT_FPS, "clips": rows}


def clip_seconds(path: Path) -> float:
    """A clip's length from its frame count and rate (what looping repeats)."""
    import cv2  # noqa: PLC0415 - heavy imports only where measured

    capture = cv2.VideoCapture(str(path))
    try:
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return round(frames / fps, 1) if fps else math.nan


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and the range around it: what a noisy shared machine allows to be said."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def naive_run(*, urls: Sequence[str], every: int, loop_file: bool, seconds: float) -> Any:
    command = [sys.executable, "-m", "benchmarks.naive", "--model", str(XML)]
    command += ["--every", str(every), "--seconds", str(seconds), "--warmup", "4"]
    if loop_file:
        command.append("--loop-file")
    for url in urls:
        command += ["--url", url]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=REPO, timeout=seconds + 120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(values: Sequence[float], *, lower_is_better: bool = False) -> dict[str, Any]:
    best = min(values) if lower_is_better else max(values)
    return {"best": best, "median": statistics.median(values), "runs": list(values)}


def machine() -> dict[str, Any]:
    import cv2  # noqa: PLC0415 - heavy imports only where measured
    import openvino as ov  # noqa: PLC0415

    from benchmarks.report import cpu_isa, cpu_model, read_cpuinfo  # noqa: PLC0415

    cpuinfo = read_cpuinfo()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        cpu_model(cpuinfo) or platform.processor(),
    )
    with Path("/proc/meminfo").open(encoding="ascii") as meminfo:
        mem_kb = int(meminfo.readline().split()[1])
    return {
        "cpu": model,
        "isa": cpu_isa(cpuinfo),
        "cores": ceilings.cores(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "openvino": ov.get_version(),
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _render(results: dict[str, Any], *, out: Path, docs: bool, chart: bool) -> int:
    """`--render`: the report of an earlier run into its folder `out`; without matplotlib,
    all but its chart."""
    from benchmarks.report import write_chart, write_docs, write_markdown  # noqa: PLC0415

    markdown = write_markdown(results=results, out=out)
    if chart:
        write_chart(results=results, out=out)
    else:
        print(
            "edge-facedet bench: chart.png not written: matplotlib is missing; install the "
            "bench extra: .venv/bin/pip install -e '.[bench]'",
            file=sys.stderr,
        )
    if docs:
        write_docs(results=results, markdown=markdown, out=out, repo=REPO)
    print(markdown)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-facedet bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    parser.add_argument("--long", action="store_true", help="memory: a 10-minute run")
    parser.add_argument("--out", type=Path, help="results root (default: results/)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--repeats", type=int, help="repeats of ceilings/throughput runs")
    parser.add_argument("--capacity-seconds", type=float, help="window of each capacity step")
    parser.add_argument("--docs", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--gating-cameras", type=int, help="where the ungated gating search starts")
    parser.add_argument(
        "--reuse", type=Path, help="an earlier results.json: keep what this run does not redo"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: write results.md and chart.png (and with --docs the docs page) "
        "again from an earlier run's results.json, into its folder",
    )
    args = parser.parse_args(argv)
    earlier: dict[str, dict[str, Any]] = {}
    for option, path in (("--render", args.render), ("--reuse", args.reuse)):
        # Checked here, so a wrong path is a usage error before anything runs.
        if path is not None:
            try:
                earlier[option] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                parser.error(f"{option} {path}: cannot read an earlier run's results: {exc}")
            if not isinstance(earlier[option], dict):
                parser.error(f"{option} {path}: not a results.json (a JSON object)")
    try:
        import matplotlib  # noqa: F401, PLC0415 - checked before a half-hour run, not after
    except ImportError:
        if args.render is not None:
            return _render(earlier["--render"], out=args.render.parent, docs=args.docs, chart=False)
        print(
            "edge-facedet bench: matplotlib is missing (the chart needs it); install the "
            "bench extra: .venv/bin/pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2

    if args.render is not None:
        return _render(earlier["--render"], out=args.render.parent, docs=args.docs, chart=True)

    from benchmarks.report import write_chart, write_docs, write_markdown  # noqa: PLC0415

    bench = Bench(args=args)
    print(f"results in {bench.out}", flush=True)
    bench.results["settings"] = {
        "quick": bench.quick, "long": bench.long, "repeats": bench.repeats,
        "capacity_seconds": bench.capacity_s, "scenarios": args.scenarios,
        "clips": {p.name: asdict(p) for p in (P720, P1080, P360)},
    }  # fmt: skip
    for scenario in SCENARIOS:
        if scenario in args.scenarios:
            bench.note_load(scenario)
            getattr(bench, scenario)()
            bench.save()
    bench.note_load("end")
    bench.results["finished"] = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    bench.save()
    markdown = write_markdown(results=bench.results, out=bench.out)
    write_chart(results=bench.results, out=bench.out)
    print(markdown)
    if args.docs:
        write_docs(results=bench.results, markdown=markdown, out=bench.out, repo=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
