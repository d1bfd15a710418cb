"""Running the real service as a user does: `edge-facedet run --config FILE` in a subprocess.

`ServiceProcess` writes the config, listens on a datagram socket as systemd's notify socket
would, and offers the metrics page parsed with `prometheus_client.parser`. Fixtures:
`model_cache` (one OpenVINO cache for every service the tests start), `services` (a factory
of started services, killed at teardown), `blackhole` (a port that accepts and never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port
from tests.support.paths import REPO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.support.broker import Received


def edge_facedet_command() -> list[str]:
    script = Path(sys.executable).parent / "edge-facedet"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "edge_facedet.cli"]


def run_cli(
    *args: str | Path, timeout: float = 120.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `edge-facedet ARGS...` to completion, capturing its output (never raises on exit)."""
    return subprocess.run(
        [*edge_facedet_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


class ServiceProcess:
    """One `edge-facedet run` process with its config, notify socket and log."""

    def __init__(
        self,
        *,
        directory: Path,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        watchdog_usec: int | None = 2_000_000,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.config_path = directory / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.metrics_port = int(config.get("metrics", {}).get("port", 0))
        self.log_path = directory / "service.log"
        self.notify_path = directory / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self.notify_path))
        self._notify.setblocking(False)
        self.notifications: list[str] = []
        self._env = {**os.environ, **(env or {}), "NOTIFY_SOCKET": str(self.notify_path)}
        if watchdog_usec is not None:
            self._env["WATCHDOG_USEC"] = str(watchdog_usec)
        self._env.pop("WATCHDOG_PID", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*edge_facedet_command(), "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=REPO,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def poll_notifications(self) -> list[str]:
        while True:
            try:
                self.notifications.append(self._notify.recv(4096).decode())
            except BlockingIOError:
                return self.notifications

    def wait_notification(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.poll_notifications():
                if message.startswith(prefix) or f"\n{prefix}" in message:
                    return message
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"service exited {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(
            f"no {prefix!r} within {timeout} s; got {self.notifications}\n{self.log()}"
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait_notification("READY=1", timeout)

    def http_get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Samples by name, then by sorted label pairs."""
        status, body = self.http_get("/metrics")
        assert status == 200
        samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[key] = sample.value
        return samples

    def threads(self) -> dict[int, str]:
        """Native thread id -> name (/proc's comm, what `top -H` shows) of each thread."""
        assert self.process is not None
        threads = {}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                threads[int(task.name)] = task.joinpath("comm").read_text().strip()
        return threads

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.http_get("/healthz")
        return status, json.loads(body)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            self._notify.close()


FAST_RECONNECT = {
    "reconnect_initial_s": 0.2,
    "reconnect_max_s": 1.0,
    "open_timeout_s": 3,
    "read_timeout_s": 3,
    "stall_timeout_s": 3,
}


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One OpenVINO cache for every service started by the tests: later starts skip compiling."""
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(config: dict[str, Any], **options: Any) -> ServiceProcess:
        service = ServiceProcess(
            directory=tmp_path / f"svc{len(started)}", config=config, **options
        )
        started.append(service)
        service.start()
        return service

    yield start
    for service in started:
        service.close()


def service_config(
    *,
    node_id: str,
    model_root: Path,
    model_cache: Path,
    mqtt_port: int,
    cameras: list[dict[str, Any]],
    batch_size: int = 1,
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "model": {
            "precision": "FP16-INT8",
            "dir": str(model_root),
            "cache_dir": str(model_cache),
            "batch_size": batch_size,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 1.0,
            "qos": {"faces": 1},
        },
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        # Motion gating off: these tests count frames (every due frame inferred); the gate
        # has its own tests (test_motion*.py) and the tracks service test runs with it on.
        "defaults": {
            "detect_fps": 5,
            "publish": {"policy": "every_frame"},
            "motion": {"enabled": False},
            **FAST_RECONNECT,
        },
        "cameras": cameras,
    }


def faces_of(messages: list[Received], prefix: str, camera: str) -> list[dict[str, Any]]:
    topic = f"{prefix}/cameras/{camera}/faces"
    return [json.loads(m.payload) for m in messages if m.topic == topic]


def states_of(messages: list[Received], prefix: str, camera: str) -> list[str]:
    topic = f"{prefix}/cameras/{camera}/state"
    return [json.loads(m.payload)["state"] for m in messages if m.topic == topic]


def capture_times(payloads: list[dict[str, Any]]) -> list[float]:
    return [
        datetime.fromisoformat(p["capture_ts"].replace("Z", "+00:00")).timestamp() for p in payloads
    ]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose kernel completes TCP handshakes but nobody ever reads or answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def new_node() -> tuple[str, str]:
    node = f"fault-{uuid.uuid4().hex[:10]}"
    return node, f"edge-facedet/{node}"


async def poll(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5
) -> Any:
    """Await a truthy `condition()` (run in a thread: it may do blocking HTTP); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {value!r})")
        await asyncio.sleep(interval)


def camera_value(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, camera: str
) -> float:
    return samples[name][(("camera", camera),)]
