"""Where the service's memory goes: `python -m benchmarks.memory`.

Runs the real service (`edge-facedet run --config X`) on 720p RTSP cameras from the tests'
GStreamer server at a few camera counts (`--steps`) and reads /proc at steady state: VmRSS,
VmHWM, anonymous and file-backed memory, threads, and every mapping's resident memory in parts
(benchmarks/procmem.py). A line through the counts with cameras gives each part's fixed share
and its share per camera.

`--references` adds two child processes that split the per-camera share: `decoders` reads the
same cameras with the service's OpenCV source alone (every frame grabbed; at detect_fps the
motion picture and the detector input), `compiled` imports what the service imports and
compiles the model as it does, with no camera.

`--compare N --pairs P` runs arms (configurations) at N cameras, interleaved; with `--files`
the cameras are files read as fast as the detector takes frames, for each arm's CPU seconds
and page faults per detection. `defaults` is config/demo.yaml's defaults on RTSP cameras
(device AUTO, no model cache), `bench` the bench's memory scenario (device CPU, a model
cache); `--env K=V` sets a variable for every arm, `--arm-env ARM:K=V` for one, and
`--arm-set ARM:model.device=CPU` a setting (an unknown arm `defaults+x` starts as
`defaults`). Figures land in results/memory-<timestamp>.json and as tables on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the package and the test support code
    sys.path.insert(0, str(REPO))

from benchmarks.media import P720, Clips, start_rtsp  # noqa: E402
from benchmarks.procmem import Footprint, cpu_s, footprint, step_table, summarise  # noqa: E402
from benchmarks.service_run import clear_retained  # noqa: E402
from edge_facedet.malloc import tune_malloc  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.paths import MODEL_ROOT  # noqa: E402
from tests.support.service import ServiceProcess  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

STEPS = (0, 1, 4, 8, 16)
DETECT_FPS = 5.0
FILE_CAMERA = {"loop": True, "realtime": False, "detect_fps": 25.0}
"""`--files`: every frame of the clip decoded and detected as fast as the detector takes them,
so the CPU seconds per detection are the work per frame, whatever the machine's load."""
CACHE = REPO / "results" / "bench-cache"
ARMS: dict[str, dict[str, Any]] = {
    # config/demo.yaml's model and defaults (publish every_frame, as the bench publishes).
    "defaults": {"model": {}, "defaults": {}},
    # benchmarks/service_run.py's configuration, which the bench's memory scenario runs.
    "bench": {
        "model": {"device": "CPU", "cache_dir": str(CACHE / "openvino")},
        "defaults": {"decoder_threads": 1},
    },
}


def service_config(
    *, urls: list[str], arm: str, metrics_port: int, files: bool = False
) -> dict[str, Any]:
    """The arm's configuration for `urls`; `files`: the URLs are files, read as `FILE_CAMERA`."""
    settings = ARMS[arm]
    extra = FILE_CAMERA if files else {}
    cameras = [{"id": f"cam{i}", "url": url, **extra} for i, url in enumerate(urls)]
    if not cameras:  # the service needs a camera: one that never connects (a closed port)
        cameras = [{"id": "none", "url": f"rtsp://127.0.0.1:{free_port()}/none"}]
    return {
        "node_id": "memory",
        "model": {"precision": "FP16-INT8", "dir": str(MODEL_ROOT), **settings["model"]},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic_prefix": f"mem/{uuid.uuid4().hex[:8]}"},
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "defaults": {
            "detect_fps": DETECT_FPS,
            "publish": {"policy": "every_frame"},
            **settings["defaults"],
        },
        "cameras": cameras,
    }


def _inferred(service: ServiceProcess) -> float:
    return sum(service.metrics().get("edge_facedet_frames_inferred_total", {}).values())


def _steady(
    pid: int, *, settle_s: float, window_s: float
) -> tuple[list[Footprint], tuple[float, int]]:
    """Wait `settle_s`, then read every 2 s for `window_s`: the readings, and the CPU seconds
    and minor page faults over the window."""
    time.sleep(settle_s)
    before = cpu_s(pid)
    readings = []
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        readings.append(footprint(pid))
        time.sleep(2.0)
    after = cpu_s(pid)
    return readings, (after[0] - before[0], after[1] - before[1])


def run_service(
    *, count: int, arm: str, env: dict[str, str], settle_s: float, window_s: float, work: Path,
    files: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The service on `count` RTSP cameras (0: none that connects), or file cameras with
    `files`, at steady state."""
    clip = Clips(cache_dir=CACHE).long(profile=P720, seconds=settle_s + window_s + 240)
    server = start_rtsp(mounts={f"m{i}": clip for i in range(max(count, 1))})
    urls = [str(clip) if files else server.url(f"m{i}") for i in range(count)]
    config = service_config(urls=urls, arm=arm, metrics_port=free_port(), files=files)
    service = ServiceProcess(
        directory=work / f"{arm}-{count}-{uuid.uuid4().hex[:6]}", config=config, env=env,
        watchdog_usec=None,
    )  # fmt: skip
    try:
        service.start()
        service.wait_ready(timeout=180)
        assert service.process is not None
        pid = service.process.pid
        time.sleep(settle_s)
        inferred = _inferred(service)
        readings, (used_s, faults) = _steady(pid, settle_s=0.0, window_s=window_s)
        detections = _inferred(service) - inferred
        if service.process.poll() is not None:
            raise RuntimeError(f"service exited:\n{service.log()[-3000:]}")
    finally:
        service.close()
        server.kill()
        clear_retained(prefix=config["mqtt"]["topic_prefix"])
    return {
        "count": count, "arm": arm, "env": env, "files": files, **summarise(readings),
        "detections_per_s": round(detections / window_s, 2),
        "cpu_s_per_detection": round(used_s / detections, 4) if detections else None,
        "faults_per_detection": round(faults / detections) if detections else None,
    }  # fmt: skip


def _child_decoders(urls: list[str]) -> None:
    """Reads `urls` as the service's readers do, minus everything after the reader."""
    from edge_facedet.sources.decoders import prefer_rtsp_over_tcp  # noqa: PLC0415
    from edge_facedet.sources.opencv import (  # noqa: PLC0415
        OpenCvSource,
        keep_opencv_in_reader_threads,
    )

    prefer_rtsp_over_tcp()
    keep_opencv_in_reader_threads()
    every = round(25 / DETECT_FPS)

    def read(url: str) -> None:
        source = OpenCvSource(
            url=url, is_device=False, threads=1, open_timeout_s=10.0, read_timeout_s=10.0
        )
        grabbed = 0
        while source.grab():
            grabbed += 1
            if grabbed % every == 0:
                source.gray(height=120)
                source.retrieve(size=(448, 448))

    for url in urls:
        threading.Thread(target=read, args=(url,), daemon=True).start()
    print("READY", flush=True)
    time.sleep(3600)


def _child_compiled(arm: str) -> None:
    """Imports what the service imports and compiles the model as `arm` does."""
    from edge_facedet.config import load_config  # noqa: PLC0415
    from edge_facedet.service import load_detector  # noqa: PLC0415

    print(f"IMPORTED {footprint(os.getpid()).rss:.1f}", flush=True)
    work = Path(os.environ["MEMORY_WORK"])
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(service_config(urls=[], arm=arm, metrics_port=9)))
    config = load_config(path)
    detector = asyncio.run(load_detector(config, cache_dir=config.model.cache_dir))
    print(f"READY {detector.info.execution_devices}", flush=True)
    time.sleep(3600)


def run_reference(
    *, kind: str, count: int, arm: str, env: dict[str, str], settle_s: float, work: Path
) -> dict[str, Any]:
    """`decoders` on `count` cameras or `compiled` for `arm`, in a child process."""
    server = None
    argv = [sys.executable, "-m", "benchmarks.memory", "--child", kind, "--arms", arm]
    if kind == "decoders":
        clip = Clips(cache_dir=CACHE).long(profile=P720, seconds=settle_s + 240)
        server = start_rtsp(mounts={f"m{i}": clip for i in range(max(count, 1))})
        argv += ["--urls", *(server.url(f"m{i}") for i in range(count))]
    child_env = {**os.environ, **env, "MEMORY_WORK": str(work / f"{kind}-{uuid.uuid4().hex[:6]}")}
    child = subprocess.Popen(argv, cwd=REPO, env=child_env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("READY")):
            line = child.stdout.readline()
            if not line:
                raise RuntimeError(f"{kind} child ended: {lines}")
            lines.append(line.strip())
        readings, _ = _steady(child.pid, settle_s=settle_s, window_s=10.0)
    finally:
        child.kill()
        child.wait()
        if server is not None:
            server.kill()
    imported = [float(x.split()[1]) for x in lines if x.startswith("IMPORTED")]
    return {
        "kind": kind, "count": count, "arm": arm, "env": env, **summarise(readings),
        **({"imported_rss_mb": imported[0]} if imported else {}),
    }  # fmt: skip


def _env_pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="camera counts")
    parser.add_argument("--arms", default="defaults", help=f"comma-separated, of {list(ARMS)}")
    parser.add_argument("--compare", type=int, default=0, help="compare the arms at N cameras")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved rounds of --compare")
    parser.add_argument("--files", action="store_true", help="--compare on file cameras")
    parser.add_argument("--env", action="append", default=[], help="K=V for every arm")
    parser.add_argument("--arm-env", action="append", default=[], help="ARM:K=V for one arm")
    parser.add_argument(
        "--arm-set", action="append", default=[], help="ARM:model.KEY=V or ARM:defaults.KEY=V"
    )
    parser.add_argument("--settle-s", type=float, default=40.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--references", action="store_true", help="decoders alone, compiled")
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--child", choices=("decoders", "compiled"), help=argparse.SUPPRESS)
    parser.add_argument("--urls", nargs="*", default=[], help=argparse.SUPPRESS)
    return parser


def _arm_envs(args: argparse.Namespace, arms: list[str]) -> dict[str, dict[str, str]]:
    """Each arm's environment; `--arm-env` and `--arm-set` on an unknown arm `BASE+NAME`
    make a new arm from the known arm BASE."""
    envs = {arm: _env_pairs(args.env) for arm in arms}

    def arm_named(arm: str) -> str:
        if arm not in ARMS:
            base = ARMS[arm.partition("+")[0]]
            ARMS[arm] = {"model": dict(base["model"]), "defaults": dict(base["defaults"])}
        envs.setdefault(arm, _env_pairs(args.env))
        return arm

    for item in args.arm_env:
        arm, _, pair = item.partition(":")
        envs[arm_named(arm)].update(_env_pairs([pair]))
    for item in args.arm_set:
        arm, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        section, _, name = key.partition(".")
        ARMS[arm_named(arm)][section][name] = yaml.safe_load(value)
    return envs


def _compare(
    args: argparse.Namespace, envs: dict[str, dict[str, str]], **run: Any
) -> Iterator[dict[str, Any]]:
    rounds: list[dict[str, Any]] = []
    for _ in range(args.pairs):
        for arm, env in envs.items():
            rounds.append(
                run_service(count=args.compare, arm=arm, env=env, files=args.files, **run)
            )
            print(json.dumps(rounds[-1]), flush=True)
            yield {"compare": rounds}


def _steps(
    args: argparse.Namespace, envs: dict[str, dict[str, str]], **run: Any
) -> Iterator[dict[str, Any]]:
    steps = [int(x) for x in args.steps.split(",")]
    arm, env = next(iter(envs.items()))
    rows: list[dict[str, Any]] = []
    for count in steps:
        rows.append(run_service(count=count, arm=arm, env=env, **run))
        print(json.dumps(rows[-1]), flush=True)
        yield {"steps": rows}
    print(step_table(rows))
    if args.references:
        refs = [
            run_reference(kind="decoders", count=count, arm=arm, env=env,
                          settle_s=args.settle_s / 2, work=run["work"])
            for count in steps
        ]  # fmt: skip
        print("decoders alone:\n" + step_table(refs))
        compiled = run_reference(
            kind="compiled", count=0, arm=arm, env=env, settle_s=5.0, work=run["work"]
        )
        print("compiled:", json.dumps(compiled))
        yield {"decoders": refs, "compiled": compiled}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child is not None:  # as the service does first (edge_facedet/cli.py)
        tune_malloc(environ=os.environ)
        if args.child == "decoders":
            _child_decoders(args.urls)
        _child_compiled(args.arms.split(",")[0])
    envs = _arm_envs(args, args.arms.split(","))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix=f"memory-{stamp}-"))
    results: dict[str, Any] = {"started": stamp, "load": os.getloadavg()}
    out = args.out / f"memory-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    run = {"settle_s": args.settle_s, "window_s": args.window_s, "work": work}
    for partial in (_compare if args.compare else _steps)(args, envs, **run):
        results.update(partial)  # saved as it goes: a long run that fails keeps its figures
        out.write_text(json.dumps(results, indent=1))
    results["load_end"] = os.getloadavg()
    out.write_text(json.dumps(results, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
