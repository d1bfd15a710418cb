"""Soak test: the real service for many minutes with faults injected, resources sampled.

Runs `edge-facedet run` with 8 cameras (4 RTSP streams from the GStreamer test server, of
which one goes through a TCP relay that can turn into a blackhole, and 4 looping files)
against a private Mosquitto, and injects one fault every `--fault-every` minutes, rotating:

* rtsp-restart: the RTSP server serving cameras r1/r2 is SIGKILLed and restarted;
* broker-restart: Mosquitto is SIGKILLed and restarted after the hold time;
* camera-stall: the RTSP server serving r3 is SIGSTOPped, SIGCONTed after the hold time;
* blackhole: the relay in front of r4 swallows everything (connections stay open, nothing
  is answered) for the hold time, then drops those connections and relays again.

Every `--sample-s` seconds it records the service's RSS (/proc/PID/status VmRSS), thread
count, open fds (/proc/PID/fd) and per-camera frames_inferred rates and states (from
/metrics and /healthz). The asyncio task count is not sampled: the service does not export
it, and a leak of tasks shows up as RSS growth anyway.

A fault's recovery time runs from the moment the fault is lifted until the affected cameras
infer frames again (broker: until edge_facedet_mqtt_connected is 1).

    .venv/bin/python benchmarks/soak.py --minutes 10 --fault-every 2

Writes results/soak-<timestamp>/{samples.csv,faults.csv,summary.md,service.log}.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the test support code (broker, RTSP server, clips) is reused
    sys.path.insert(0, str(REPO))

from edge_facedet.tools.assets import fetch_model  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402
from tests.support.media import ClipMaker  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MEDIA, MODEL_MIRROR, MODEL_ROOT  # noqa: E402
from tests.support.rtsp import RtspServer  # noqa: E402
from tests.support.service import ServiceProcess  # noqa: E402

FAULTS = ("rtsp-restart", "broker-restart", "camera-stall", "blackhole")
HOLD_S = 15.0
RECOVERY_LIMIT_S = 120.0
FILE_VIDEOS = (
    FACE_VIDEO,
    HIKERS_VIDEO,
    MEDIA / "videos" / "blender_tears_of_steel_clip01_640x360.mp4",
    MEDIA / "videos" / "openmpf_new_face_video_rotation_baked_640x480.mp4",
)


class Relay:
    """A TCP relay to one upstream port that can be switched into a blackhole.

    Blackhole: existing connections stay open but nothing is relayed either way, new ones are
    accepted and never answered - a camera whose network path died without a reset.
    """

    def __init__(self, *, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket | None] = {}
        self._blackhole = False
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()

    def set_blackhole(self, *, on: bool) -> None:
        with self._lock:
            self._blackhole = on
            if not on:
                # The swallowed connections are dead for the client's protocol anyway; a
                # reset makes it reconnect through the restored path.
                for sock in list(self._peers):
                    self._drop(sock)

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
        with self._lock:
            for sock in list(self._peers):
                self._drop(sock)
        self._listener.close()

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            self._peers.pop(s, None)
            s.close()

    def _run(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=0.2):
                with self._lock:
                    self._handle(key.fileobj)  # type: ignore[arg-type]

    def _handle(self, sock: socket.socket) -> None:
        if sock is self._listener:
            client, _ = self._listener.accept()
            if self._blackhole:
                self._peers[client] = None
                self._selector.register(client, selectors.EVENT_READ, None)
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=2)
            except OSError:
                client.close()
                return
            self._peers[client] = upstream
            self._peers[upstream] = client
            for s in (client, upstream):
                self._selector.register(s, selectors.EVENT_READ, None)
            return
        if sock not in self._peers:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        peer = self._peers.get(sock)
        if self._blackhole or peer is None:
            return  # swallowed
        try:
            peer.sendall(data)
        except OSError:
            self._drop(sock)


@dataclass
class Fault:
    kind: str
    cameras: tuple[str, ...]
    injected_at: float
    lifted_at: float | None = None
    recovered_at: float | None = None
    baseline: dict[str, float] = field(default_factory=dict)

    @property
    def recovery_s(self) -> float | None:
        if self.lifted_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.lifted_at


def proc_figures(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, threads, open fds) of a process, from /proc."""
    rss_kib = 0
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return rss_kib / 1024.0, threads, fds


def inferred_by_camera(samples: dict[str, dict[Any, float]]) -> dict[str, float]:
    family = samples.get("edge_facedet_frames_inferred_total", {})
    return {dict(labels)["camera"]: value for labels, value in family.items()}


def main() -> int:  # noqa: PLR0915 - one scenario, start to finish
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-every", type=float, default=5.0, help="minutes between faults")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args()

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / f"soak-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    fetch_model(precision="FP16-INT8", dest=MODEL_ROOT, mirror=MODEL_MIRROR)
    # The GStreamer server plays each clip once: make them outlast the run.
    # Rounded up to whole 13-minute clips, so runs of similar length share the cached encode
    # (an encode of the full length takes minutes on a loaded two-core machine).
    clip_s = 780.0 * max(1, math.ceil((args.minutes * 60 + 120) / 780.0))
    print(f"encoding {clip_s:.0f} s RTSP clip ...", flush=True)
    clip = ClipMaker(cache_dir=REPO / "results" / "soak-clips").clip(
        seconds=clip_s, width=640, height=480, fps=15
    )
    server_a = RtspServer(mounts={"r1": clip, "r2": clip}, port=free_port())
    server_b = RtspServer(mounts={"r3": clip, "r4": clip}, port=free_port())
    relay = Relay(upstream_port=server_b.port)
    broker = MosquittoBroker(directory=work / "broker", port=free_port())
    broker.start()
    cameras: list[dict[str, Any]] = [
        {"id": "r1", "url": server_a.url("r1")},
        {"id": "r2", "url": server_a.url("r2")},
        {"id": "r3", "url": server_b.url("r3")},
        {"id": "r4", "url": f"rtsp://127.0.0.1:{relay.port}/r4"},
    ] + [
        {"id": f"f{index + 1}", "url": str(video), "loop": True}
        for index, video in enumerate(FILE_VIDEOS)
    ]
    camera_ids = [camera["id"] for camera in cameras]
    config = {
        "node_id": f"soak-{stamp.lower()}",
        "model": {
            "precision": "FP16-INT8",
            "dir": str(MODEL_ROOT),
            "cache_dir": str(REPO / "results" / "soak-openvino-cache"),
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "reconnect_initial_s": 0.5,
            "reconnect_max_s": 5.0,
        },
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "defaults": {
            "detect_fps": 3,
            "publish": {"policy": "every_frame"},
            "open_timeout_s": 3,
            "read_timeout_s": 3,
            "stall_timeout_s": 3,
            "reconnect_initial_s": 0.5,
            "reconnect_max_s": 5.0,
        },
        "cameras": cameras,
    }
    service = ServiceProcess(directory=work / "service", config=config, watchdog_usec=None)
    service.start()
    service.wait_ready(timeout=180)
    assert service.process is not None
    pid = service.process.pid
    print(f"service pid {pid} ready; soaking {args.minutes} min", flush=True)

    rows: list[dict[str, Any]] = []
    faults: list[Fault] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    next_sample = started
    next_fault = started + args.fault_every * 60
    active: Fault | None = None
    last_inferred: dict[str, float] = {}
    last_sample_t = started
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            # Read the notify socket as systemd does; an unread one fills up.
            service.poll_notifications()
            service.notifications.clear()
            if service.process.poll() is not None:
                print(f"service exited {service.process.returncode}", flush=True)
                break
            if active is None and now >= next_fault:
                kind = FAULTS[len(faults) % len(FAULTS)]
                active = inject(
                    kind, server_a=server_a, server_b=server_b, relay=relay, broker=broker, now=now
                )
                active.baseline = (
                    inferred_by_camera(service.metrics()) if kind != "broker-restart" else {}
                )
                faults.append(active)
                print(f"[{(now - started) / 60:5.1f} min] fault {kind}", flush=True)
                next_fault = now + args.fault_every * 60
            if active is not None:
                if active.lifted_at is None and now - active.injected_at >= HOLD_S:
                    lift(
                        active.kind,
                        server_a=server_a,
                        server_b=server_b,
                        relay=relay,
                        broker=broker,
                    )
                    active.lifted_at = time.monotonic()
                    active.baseline = inferred_by_camera(service.metrics())
                elif active.lifted_at is not None:
                    done = recovered(active, service=service)
                    if done or now - active.lifted_at > RECOVERY_LIMIT_S:
                        if done:
                            active.recovered_at = time.monotonic()
                        print(f"    {active.kind} recovery: {active.recovery_s}", flush=True)
                        active = None
            if now >= next_sample:
                rss, threads, fds = proc_figures(pid)
                samples = service.metrics()
                inferred = inferred_by_camera(samples)
                _, health = service.health()
                elapsed = max(now - last_sample_t, 1e-6)
                row: dict[str, Any] = {
                    "t_s": round(now - started, 1),
                    "rss_mib": round(rss, 1),
                    "threads": threads,
                    "fds": fds,
                    "mqtt_connected": samples["edge_facedet_mqtt_connected"][()],
                    "fault": active.kind if active else "",
                }
                for camera in camera_ids:
                    rate = (inferred.get(camera, 0.0) - last_inferred.get(camera, 0.0)) / elapsed
                    row[f"{camera}_fps"] = round(rate, 2) if last_inferred else ""
                    row[f"{camera}_state"] = health.get("cameras", {}).get(camera, "")
                rows.append(row)
                last_inferred, last_sample_t = inferred, now
                print(
                    f"[{(now - started) / 60:5.1f} min] rss {rss:.1f} MiB threads {threads} "
                    f"fds {fds} states {json.dumps(health.get('cameras', {}))}",
                    flush=True,
                )
                next_sample += args.sample_s
            time.sleep(0.5)
        code, stop_s = service.terminate(timeout=20)
    finally:
        service.close()
        (out / "service.log").write_text(service.log())
        relay.close()
        server_a.kill()
        server_b.kill()
        broker.kill()
    write_results(
        out=out,
        rows=rows,
        faults=faults,
        minutes=args.minutes,
        fault_every=args.fault_every,
        exit_code=code,
        stop_s=stop_s,
    )
    return 0


def inject(
    kind: str,
    *,
    server_a: RtspServer,
    server_b: RtspServer,
    relay: Relay,
    broker: MosquittoBroker,
    now: float,
) -> Fault:
    if kind == "rtsp-restart":
        server_a.kill()
        return Fault(kind, ("r1", "r2"), now)
    if kind == "broker-restart":
        broker.kill()
        return Fault(kind, (), now)
    if kind == "camera-stall":
        server_b.pause()
        return Fault(kind, ("r3",), now)
    relay.set_blackhole(on=True)
    return Fault(kind, ("r4",), now)


def lift(
    kind: str, *, server_a: RtspServer, server_b: RtspServer, relay: Relay, broker: MosquittoBroker
) -> None:
    if kind == "rtsp-restart":
        server_a.start()
    elif kind == "broker-restart":
        broker.start()
    elif kind == "camera-stall":
        server_b.resume()
    else:
        relay.set_blackhole(on=False)


def recovered(fault: Fault, *, service: ServiceProcess) -> bool:
    samples = service.metrics()
    if fault.kind == "broker-restart":
        return samples["edge_facedet_mqtt_connected"][()] == 1
    inferred = inferred_by_camera(samples)
    return all(inferred.get(c, 0) > fault.baseline.get(c, 0) for c in fault.cameras)


def write_results(
    *,
    out: Path,
    rows: list[dict[str, Any]],
    faults: list[Fault],
    minutes: float,
    fault_every: float,
    exit_code: int,
    stop_s: float,
) -> None:
    with (out / "samples.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with (out / "faults.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "cameras", "injected_min", "recovery_s"])
        for fault in faults:
            writer.writerow(
                [
                    fault.kind,
                    " ".join(fault.cameras),
                    round((fault.injected_at - faults[0].injected_at) / 60, 2),
                    "" if fault.recovery_s is None else round(fault.recovery_s, 2),
                ]
            )
    after_warmup = [r for r in rows if r["t_s"] >= 120] or rows
    # Medians of a minute each: one sample may fall inside a fault (cameras disconnected,
    # their decoder buffers freed) and would make the growth look larger or smaller.
    rss_start = statistics.median(r["rss_mib"] for r in after_warmup[:6])
    rss_end = statistics.median(r["rss_mib"] for r in rows[-6:])
    growth = 100.0 * (rss_end - rss_start) / rss_start
    threads = [r["threads"] for r in rows]
    fds = [r["fds"] for r in rows]
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = [
        f"# Soak {out.name}",
        "",
        f"- machine: {os.uname().nodename}, {os.cpu_count()} CPUs, load {' '.join(load)} at end",
        f"- date (UTC): {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- duration: {minutes} min, a fault every {fault_every} min, 8 cameras",
        (
            f"- RSS (MiB, median of a minute): minute 2-3 {rss_start}, last minute {rss_end}, "
            f"growth {growth:+.1f} %,"
            f" max {max(r['rss_mib'] for r in rows)}"
        ),
        (
            f"- threads: min {min(threads)}, max {max(threads)}, at 2 min "
            f"{after_warmup[0]['threads']}, at end {threads[-1]}"
        ),
        (
            f"- open fds: min {min(fds)}, max {max(fds)}, at 2 min {after_warmup[0]['fds']},"
            f" at end {fds[-1]}"
        ),
        f"- SIGTERM at the end: exit {exit_code} in {stop_s:.2f} s",
        "",
        "| fault | cameras | injected at (min) | recovery after lift (s) |",
        "|---|---|---|---|",
    ]
    for fault in faults:
        recovery = "not recovered" if fault.recovery_s is None else f"{fault.recovery_s:.1f}"
        at = (fault.injected_at - faults[0].injected_at) / 60 + fault_every
        lines.append(
            f"| {fault.kind} | {' '.join(fault.cameras) or 'mqtt'} | {at:.1f} | {recovery} |"
        )
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
