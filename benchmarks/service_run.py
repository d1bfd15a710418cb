"""One measured run of the real service, observed from the outside as a user would.

Owns: the generated configuration (`edge-facedet run`, publish policy every_frame, metrics
on, the local Mosquitto), the process (`tests.support.service.ServiceProcess`, which waits for
systemd's READY=1), an MQTT subscriber that timestamps every faces message (and, when asked,
every track event) on receipt, and an RSS sampler reading /proc. From those: detections/s per
camera over a window, latency from each payload's `capture_ts` to its receipt (one machine, one
clock), messages per camera and topic, the service's own counters of track events and
snapshots, RSS over time and its peak.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_facedet.sources.reader import READER_THREAD_PREFIX
from tests.support.broker import BrokerAddress, delete_retained
from tests.support.net import free_port
from tests.support.paths import MODEL_ROOT
from tests.support.service import ServiceProcess

BROKER = ("127.0.0.1", 1883)
READY_TIMEOUT_S = 120.0
START_TIMEOUT_S = 120.0


class FaceCounter:
    """Subscribes to every camera's faces topic under one prefix, and to each further topic
    kind in `kinds` (e.g. "events"); keeps (receipt, topic, payload)."""

    def __init__(self, *, prefix: str, kinds: tuple[str, ...] = ("faces",)) -> None:
        self._prefix = prefix
        self._kinds = ("faces", *(kind for kind in kinds if kind != "faces"))
        self.received: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def __enter__(self) -> FaceCounter:
        self._client.connect(*BROKER)
        self._client.loop_start()
        if not self._subscribed.wait(10.0):
            raise RuntimeError("MQTT subscriber did not subscribe within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(f"{self._prefix}/cameras/+/{kind}", 0) for kind in self._kinds])

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        # Receipt time first; parsing waits until the run is over (the CPU is the subject).
        received = time.time()
        with self._lock:
            self.received.append((received, message.topic, message.payload))

    def wait_for_all(self, *, camera_ids: list[str], timeout_s: float) -> bool:
        """Until every camera has published once: opens are serialised inside OpenCV (about
        1 s per RTSP camera here), so a window started at READY would count cameras that
        are still opening."""
        wanted = {f"{self._prefix}/cameras/{camera_id}/faces" for camera_id in camera_ids}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                seen = {topic for _, topic, _ in self.received}
            if wanted <= seen:
                return True
            time.sleep(0.2)
        return False

    @property
    def kinds(self) -> tuple[str, ...]:
        return self._kinds

    def window(self, *, start: float, end: float) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return [item for item in self.received if start <= item[0] < end]


@dataclass
class RssSampler:
    """Samples a process's VmRSS every `interval_s`; `peak_mb` reads VmHWM at the end."""

    pid: int
    interval_s: float = 1.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    peak_mb: float = 0.0
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.peak_mb = max(self.peak_mb, _status_mb(self.pid, "VmHWM"))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = _status_mb(self.pid, "VmRSS")
            if rss:
                self.samples.append((time.monotonic() - self.started, rss))


def _status_mb(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:  # noqa: PTH123
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return 0.0
    return 0.0


def clear_retained(*, prefix: str) -> int:
    """Delete the retained messages a run's service left under `prefix` (status, camera
    states, discovery): each run has a prefix of its own, so they would pile up in the
    broker. Returns how many were deleted."""
    return delete_retained(BrokerAddress(*BROKER), filters=(f"{prefix}/#",))


@dataclass
class ServiceResult:
    cameras: int
    seconds: float
    per_camera: dict[str, float]
    latencies_ms: list[float]
    internal_latencies_ms: list[float]
    rss: list[tuple[float, float]]
    peak_rss_mb: float
    cpu_s: float
    """User + system CPU seconds of the service over the measured window."""
    all_started: bool = True
    """Whether every camera had published before the warm-up began."""
    window_offset_s: float = 0.0
    """When the measured window began, on the clock of the `rss` samples."""
    log_tail: str = ""
    stale_per_s: float = 0.0
    """Due frames the service did not detect because a reader was behind its live stream
    (`edge_facedet_frames_stale_total` over the window): the service is over capacity."""
    frame_counts: dict[str, float] = field(default_factory=dict)
    """The service's frame counters summed over cameras, increase over the window: `inferred`,
    `dropped` (a due frame replaced while its camera's previous one still waited for the
    detector: over capacity), `gated` (skipped by motion gating), `stale`, `captured`."""
    grabbed_per_camera_s: float = 0.0
    """Frames read per camera per second over the window: below the stream's rate, the
    readers are falling behind (and skip detections to catch up)."""
    neighbour_cores: dict[str, float] = field(default_factory=dict)
    """CPU cores used over the window by the other processes of the run (RTSP server, broker,
    this benchmark's subscriber): the share of the machine the service could not have."""
    thread_cores: dict[str, float] = field(default_factory=dict)
    """The service's CPU cores over the window by thread role: `readers` (threads named
    `cam-<id>`: decoding, BGR, resize), `event_loop` (the main thread: scheduling, results,
    MQTT) and `other` (OpenVINO's inference threads, the metrics server)."""
    messages: dict[str, dict[str, int]] = field(default_factory=dict)
    """Messages received over the window by topic kind ("faces", "events", ...) and camera."""
    event_types: dict[str, dict[str, int]] = field(default_factory=dict)
    """Track events received over the window by camera and type (new, update, end)."""
    track_counters: dict[str, float] = field(default_factory=dict)
    """The service's counters of track events (`events_<type>`) and snapshots
    (`snapshots_<result>`), summed over cameras, increase over the window."""
    track_totals: dict[str, float] = field(default_factory=dict)
    """The same counters' values at the end of the window (since the service started)."""
    snapshot_files: int = 0
    """Files in the run's snapshot directory when the window ended (0 without one)."""

    @property
    def total_fps(self) -> float:
        return sum(self.per_camera.values())

    @property
    def min_camera_fps(self) -> float:
        return min(self.per_camera.values()) if self.per_camera else 0.0

    def percentile(self, q: float, *, internal: bool = False) -> float:
        values = self.internal_latencies_ms if internal else self.latencies_ms
        if len(values) < 2:
            return float("nan")
        return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


@dataclass(frozen=True)
class Camera:
    id: str
    url: str
    detect_url: str | None = None
    loop: bool = False
    realtime: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    """The camera's own settings over `defaults` (e.g. `{"publish": {"policy": "on_change"}}`)."""


def service_config(
    *, cameras: list[Camera], detect_fps: float, prefix: str, cache_dir: Path,
    model_overrides: dict[str, Any] | None = None, defaults_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    entries: list[dict[str, Any]] = []
    for camera in cameras:
        entry: dict[str, Any] = {"id": camera.id, "url": camera.url}
        if camera.detect_url is not None:
            entry["detect_url"] = camera.detect_url
        if camera.loop:
            entry["loop"] = True
        if not camera.realtime:
            entry["realtime"] = False
        entries.append({**entry, **camera.settings})
    return {
        "node_id": "bench",
        "model": {
            "precision": "FP16-INT8",
            "dir": str(MODEL_ROOT),
            # The same device as benchmark_app's ceiling (AUTO would resolve to it here).
            "device": "CPU",
            "performance_hint": "THROUGHPUT",
            "cache_dir": str(cache_dir),
            **(model_overrides or {}),
        },
        "mqtt": {"host": BROKER[0], "port": BROKER[1], "topic_prefix": prefix},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "defaults": {
            "detect_fps": detect_fps,
            "publish": {"policy": "every_frame"},
            "decoder_threads": 1,
            **(defaults_overrides or {}),
        },
        "cameras": entries,
    }


@dataclass(frozen=True)
class Observed:
    """What a run watches beyond the faces topic, and the node settings that go with it."""

    kinds: tuple[str, ...] = ("faces",)
    """Topic kinds the subscriber counts ("events": every track event, parsed for its type)."""
    snapshot_dir: bool = False
    """Give the node a `snapshot_dir` in the run's work directory (files beside MQTT)."""


def run_service(
    *, cameras: list[Camera], detect_fps: float, warmup_s: float, seconds: float,
    workdir: Path, cache_dir: Path, rss_interval_s: float = 1.0,
    model_overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None,
    defaults_overrides: dict[str, Any] | None = None, neighbours: dict[str, int] | None = None,
    observed: Observed | None = None,
) -> ServiceResult:  # fmt: skip
    """Start the service, wait `warmup_s` after READY, count for `seconds`, stop it."""
    observed = observed or Observed()
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    config = service_config(
        cameras=cameras, detect_fps=detect_fps, prefix=prefix, cache_dir=cache_dir,
        model_overrides=model_overrides, defaults_overrides=defaults_overrides,
    )  # fmt: skip
    snapshots = workdir / "snapshots"
    if observed.snapshot_dir:
        snapshots.mkdir(parents=True, exist_ok=True)
        config["snapshot_dir"] = {"path": str(snapshots)}
    service = ServiceProcess(directory=workdir, config=config, env=env, watchdog_usec=None)
    with FaceCounter(prefix=prefix, kinds=observed.kinds) as counter:
        service.start()
        try:
            service.wait_ready(timeout=READY_TIMEOUT_S)
            assert service.process is not None
            pid = service.process.pid
            sampler = RssSampler(pid=pid, interval_s=rss_interval_s)
            sampler.start()
            all_started = counter.wait_for_all(
                camera_ids=[camera.id for camera in cameras], timeout_s=START_TIMEOUT_S
            )
            time.sleep(warmup_s)
            window_offset_s = time.monotonic() - sampler.started
            watched = {"subscriber": os.getpid(), **(neighbours or {})}
            broker = _broker_pid()
            if broker is not None:
                watched["broker"] = broker
            neighbours_before = {name: _cpu_s(p) for name, p in watched.items()}
            counters_before = _counters(service)
            cpu_before = _cpu_s(pid)
            threads_before = _thread_cpu_s(service)
            start = time.time()
            time.sleep(seconds)
            end = time.time()
            cpu_s = _cpu_s(pid) - cpu_before
            threads_after = _thread_cpu_s(service)
            counters_after = _counters(service)
            snapshot_files = _count_files(snapshots)
            neighbour_cores = {
                name: round((_cpu_s(p) - neighbours_before[name]) / (end - start), 3)
                for name, p in watched.items()
            }
            sampler.stop()
            if service.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{service.log()[-3000:]}")
        finally:
            if service.process is not None and service.process.poll() is None:
                service.terminate(timeout=20)
            service.close()
            clear_retained(prefix=prefix)
        tally = _tally(
            counter.window(start=start, end=end),
            camera_ids=[camera.id for camera in cameras],
            kinds=counter.kinds,
        )
    elapsed = end - start
    return ServiceResult(
        cameras=len(cameras),
        seconds=elapsed,
        per_camera={
            camera_id: count / elapsed for camera_id, count in tally.messages["faces"].items()
        },
        latencies_ms=tally.latencies_ms,
        internal_latencies_ms=tally.internal_latencies_ms,
        rss=sampler.samples,
        peak_rss_mb=sampler.peak_mb,
        cpu_s=cpu_s,
        all_started=all_started,
        window_offset_s=window_offset_s,
        log_tail=service.log()[-2000:],
        stale_per_s=(counters_after["stale"] - counters_before["stale"]) / elapsed,
        frame_counts={key: counters_after[key] - counters_before[key] for key in FRAME_COUNTERS},
        grabbed_per_camera_s=(counters_after["captured"] - counters_before["captured"])
        / elapsed
        / len(cameras),
        neighbour_cores=neighbour_cores,
        thread_cores={
            role: round((threads_after[role] - threads_before[role]) / elapsed, 3)
            for role in threads_after
        },
        messages=tally.messages,
        event_types=tally.event_types,
        track_counters=_track_counters(counters_after, before=counters_before),
        track_totals=_track_counters(counters_after),
        snapshot_files=snapshot_files,
    )


@dataclass
class _Tally:
    """The subscriber's window, counted: messages by kind and camera, event types, latencies."""

    messages: dict[str, dict[str, int]]
    event_types: dict[str, dict[str, int]]
    latencies_ms: list[float] = field(default_factory=list)
    internal_latencies_ms: list[float] = field(default_factory=list)


def _tally(
    window: list[tuple[float, str, bytes]], *, camera_ids: list[str], kinds: tuple[str, ...]
) -> _Tally:
    tally = _Tally(
        messages={kind: dict.fromkeys(camera_ids, 0) for kind in kinds},
        event_types={camera_id: {} for camera_id in camera_ids},
    )
    for received, topic, payload in window:
        camera_id, kind = topic.split("/")[-2:]
        tally.messages[kind][camera_id] = tally.messages[kind].get(camera_id, 0) + 1
        if kind == "events":
            event_type = str(json.loads(payload).get("type"))
            types = tally.event_types.setdefault(camera_id, {})
            types[event_type] = types.get(event_type, 0) + 1
        elif kind == "faces":
            body = json.loads(payload)
            captured = datetime.fromisoformat(body["capture_ts"].replace("Z", "+00:00"))
            tally.latencies_ms.append((received - captured.timestamp()) * 1000.0)
            tally.internal_latencies_ms.append(float(body["latency_ms"]))
    return tally


def _track_counters(
    after: dict[str, float], *, before: dict[str, float] | None = None
) -> dict[str, float]:
    """The track event and snapshot counters of a scrape, less those of `before` if given."""
    return {
        key: value - (before or {}).get(key, 0.0)
        for key, value in after.items()
        if key.startswith(TRACK_COUNTER_PREFIXES)
    }


TRACK_COUNTER_PREFIXES = ("events_", "snapshots_")
# The per-camera frame counters (edge_facedet_frames_<key>_total) read before and after.
FRAME_COUNTERS = ("stale", "captured", "inferred", "dropped", "gated")
# Labelled families summed over cameras, one sum per value of the other label.
_LABELLED = (
    ("edge_facedet_events_published_total", "type", "events"),
    ("edge_facedet_snapshots_total", "result", "snapshots"),
)


def _counters(service: ServiceProcess) -> dict[str, float]:
    """Sums over cameras of the service's frame counters (FRAME_COUNTERS), and of its
    track events by type (`events_new`, ...) and snapshots by result (`snapshots_published`,
    ...), as a Prometheus scrape sees them."""
    samples = service.metrics()
    sums = {
        key: sum(samples.get(f"edge_facedet_frames_{key}_total", {}).values())
        for key in FRAME_COUNTERS
    }
    for name, label, short in _LABELLED:
        for labels, value in samples.get(name, {}).items():
            key = f"{short}_{dict(labels).get(label, '?')}"
            sums[key] = sums.get(key, 0.0) + value
    return sums


def _count_files(directory: Path) -> int:
    """Regular files under `directory` (0 when it does not exist)."""
    if not directory.is_dir():
        return 0
    return sum(1 for path in directory.rglob("*") if path.is_file())


def _broker_pid() -> int | None:
    """The system Mosquitto's pid (the broker the service publishes to), if found."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"mosquitto") and b"/etc/mosquitto/mosquitto.conf" in argv:
            return int(entry.name)
    return None


def _cpu_s(pid: int) -> float:
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def _thread_cpu_s(service: ServiceProcess) -> dict[str, float]:
    """CPU seconds of the service's threads by role (see `ServiceResult.thread_cores`); a
    thread that ended in between is missing from the later sum (none do while streaming)."""
    assert service.process is not None
    pid = service.process.pid
    totals = {"readers": 0.0, "event_loop": 0.0, "other": 0.0}
    for tid, name in service.threads().items():
        if name.startswith(READER_THREAD_PREFIX):
            role = "readers"
        elif tid == pid:
            role = "event_loop"
        else:
            role = "other"
        totals[role] += _stat_cpu_s(Path(f"/proc/{pid}/task/{tid}/stat"))
    return totals


def _stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file; 0 when the process or thread ended."""
    try:
        fields = stat.read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
