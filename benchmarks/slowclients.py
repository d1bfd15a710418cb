"""Slow and oversized HTTP clients against the running service's metrics endpoint.

Starts the real service (`edge-facedet run`, two looping file cameras, the local Mosquitto)
with the soft descriptor limit systemd gives a service by default (1,024), then in turn:
a quiet baseline, 1,000 slow-loris clients (a request line, then one header line every 2 s,
never finishing; a dropped client reconnects after 1 s, as attack tools do), 39 clients
sending 100 header lines of 64 KiB each and holding the connection, and a quiet tail. A
scraper fetches `/metrics` every 0.1 s throughout. Reported per phase: the service's open
descriptors (`/proc/<pid>/fd`), threads and RSS (max over the phase), `/metrics` latency
p50/p99 and failed scrapes, frames inferred (the cameras kept going), and the endpoint's
dropped-connection counters.

    .venv/bin/python -m benchmarks.slowclients
    .venv/bin/python -m benchmarks.run --scenarios slowclients   # the same, in the suite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the package and the test support code
    sys.path.insert(0, str(REPO))

from benchmarks.service_run import (  # noqa: E402
    READY_TIMEOUT_S,
    Camera,
    clear_retained,
    service_config,
)
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO  # noqa: E402
from tests.support.service import ServiceProcess  # noqa: E402

SERVICE_NOFILE = 1024  # systemd's default soft limit for a service
SLOW_CLIENTS = 1000
SLOW_LINE_S = 2.0
BIG_CLIENTS = 39
BIG_LINES = 100
BIG_LINE_BYTES = 64 * 1024
RECONNECT_S = 1.0
SCRAPE_EVERY_S = 0.1
SCRAPE_TIMEOUT_S = 5.0
# RSS still grows for a while after READY (allocator arenas, decoder buffers): the quiet
# phase starts after it, so the attack phases are compared with a settled baseline.
WARMUP_S = 20.0


class Attack:
    """Clients on an asyncio loop in a thread of their own, until `stop()`."""

    def __init__(self, *, port: int, kind: str, count: int) -> None:
        self._port = port
        self._kind = kind
        self._count = count
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self.connects = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(20)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        client = self._slow if self._kind == "slow" else self._big
        tasks = [asyncio.create_task(self._forever(client)) for _ in range(self._count)]
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _forever(self, client: Any) -> None:
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
                self.connects += 1
                await client(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                if writer is not None:
                    writer.transport.abort()
            await asyncio.sleep(RECONNECT_S)

    async def _slow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        line = 0
        while not reader.at_eof():
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                if await asyncio.wait_for(reader.read(65536), SLOW_LINE_S) == b"":
                    return
            line += 1
            writer.write(f"X-Slow-{line}: {line}\r\n".encode())

    async def _big(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        value = b"a" * BIG_LINE_BYTES
        for line in range(BIG_LINES):
            writer.write(b"X-Big-%d: %s\r\n" % (line, value))
            await writer.drain()
        while await reader.read(65536):  # hold the connection until the server closes it
            pass


class Observer:
    """Scrapes /metrics every SCRAPE_EVERY_S and samples the service's /proc figures."""

    def __init__(self, *, pid: int, port: int) -> None:
        self._pid = pid
        self._port = port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._scrapes: list[float | None] = []
        self._samples: list[tuple[int, int, float]] = []
        self._threads = [
            threading.Thread(target=self._scrape, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]

    def __enter__(self) -> Observer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(SCRAPE_TIMEOUT_S + 1)

    def take(self) -> tuple[list[float | None], list[tuple[int, int, float]]]:
        """Scrape latencies (None: failed) and (fds, threads, rss MiB) since the last take."""
        with self._lock:
            scrapes, samples = self._scrapes, self._samples
            self._scrapes, self._samples = [], []
        return scrapes, samples

    def _scrape(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY_S):
            started = time.monotonic()
            latency: float | None = None
            # An answer cut short (no status line) is a failed scrape like a refused one.
            with contextlib.suppress(OSError, ValueError, IndexError):
                if http_get(self._port, "/metrics")[0] == 200:
                    latency = (time.monotonic() - started) * 1000.0
            with self._lock:
                self._scrapes.append(latency)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            sample = proc_figures(self._pid)
            with self._lock:
                self._samples.append(sample)


def http_get(port: int, path: str) -> tuple[int, bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=SCRAPE_TIMEOUT_S) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def proc_figures(pid: int) -> tuple[int, int, float]:
    """(open descriptors, threads, RSS MiB) of a process."""
    try:
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0, 0, 0.0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024.0


def scraped(port: int) -> dict[str, float]:
    """The counters this benchmark reports, from one scrape."""
    _, body = http_get(port, "/metrics")
    wanted = ("edge_facedet_frames_inferred_total", "edge_facedet_http_connections_dropped_total")
    totals: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith(wanted):
            name, value = line.rsplit(" ", 1)
            key = name if "reason" in name else name.split("{", 1)[0]
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def summarise(
    name: str, seconds: float, scrapes: list[float | None], samples: list[tuple[int, int, float]]
) -> dict[str, Any]:
    ok = sorted(latency for latency in scrapes if latency is not None)
    quantiles = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) >= 2 else [0] * 99
    return {
        "phase": name,
        "seconds": round(seconds, 1),
        "fds_max": max((s[0] for s in samples), default=0),
        "threads_max": max((s[1] for s in samples), default=0),
        "rss_max_mib": round(max((s[2] for s in samples), default=0.0), 1),
        "rss_end_mib": round(samples[-1][2], 1) if samples else 0.0,
        "scrapes": len(scrapes),
        "scrapes_failed": len(scrapes) - len(ok),
        "metrics_p50_ms": round(quantiles[49], 1),
        "metrics_p99_ms": round(quantiles[98], 1),
        "metrics_max_ms": round(ok[-1], 1) if ok else None,
    }


def run(*, workdir: Path, cache_dir: Path, phase_s: float = 15.0) -> dict[str, Any]:
    """The four phases against one service; returns the figures per phase."""
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    cameras = [
        Camera(id="faces", url=str(FACE_VIDEO), loop=True),
        Camera(id="hikers", url=str(HIKERS_VIDEO), loop=True),
    ]
    config = service_config(cameras=cameras, detect_fps=5.0, prefix=prefix, cache_dir=cache_dir)
    service = ServiceProcess(directory=workdir, config=config, watchdog_usec=None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The service inherits systemd's default soft limit; this process needs more (the clients).
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SERVICE_NOFILE, hard), hard))
    try:
        service.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    phases: list[dict[str, Any]] = []
    try:
        service.wait_ready(timeout=READY_TIMEOUT_S)
        assert service.process is not None
        pid, port = service.process.pid, service.metrics_port
        time.sleep(WARMUP_S)
        with Observer(pid=pid, port=port) as observer:
            for name, kind, count in (
                ("quiet", None, 0),
                (f"{SLOW_CLIENTS} slow clients", "slow", SLOW_CLIENTS),
                (f"{BIG_CLIENTS} large-header clients", "big", BIG_CLIENTS),
                ("after", None, 0),
            ):
                phases.append(
                    _phase(name, kind, count, observer=observer, port=port, seconds=phase_s)
                )
                print(json.dumps(phases[-1]), flush=True)
        if service.process.poll() is not None:
            raise RuntimeError(f"service exited during the run:\n{service.log()[-3000:]}")
        counters = scraped(port)
    finally:
        if service.process is not None and service.process.poll() is None:
            service.terminate(timeout=20)
        service.close()
        clear_retained(prefix=prefix)
    return {"phases": phases, "counters": counters, "service_nofile": SERVICE_NOFILE}


def _phase(
    name: str, kind: str | None, count: int, *, observer: Observer, port: int, seconds: float
) -> dict[str, Any]:
    before = scraped(port)
    counted_from = time.monotonic()
    observer.take()
    attack = Attack(port=port, kind=kind, count=count) if kind else None
    started = time.monotonic()
    if attack is not None:
        attack.start()
    time.sleep(seconds)
    scrapes, samples = observer.take()
    elapsed = time.monotonic() - started
    if attack is not None:
        attack.stop()
    after = scraped(port)
    # The counters span the attack's start and stop too (closing 1,000 clients takes a while):
    # the rate is over the time between the two scrapes, not the phase's nominal length.
    counted_s = time.monotonic() - counted_from
    result = summarise(name, elapsed, scrapes, samples)
    inferred = "edge_facedet_frames_inferred_total"
    result["inferred_per_s"] = round((after[inferred] - before[inferred]) / counted_s, 1)
    result["client_connects"] = attack.connects if attack is not None else 0
    result["dropped"] = {
        key.split('reason="')[1].rstrip('"}'): after[key] - before.get(key, 0.0)
        for key in after
        if "reason" in key and after[key] - before.get(key, 0.0)
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "results" / "bench-cache")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-slowclients-"))
    results = run(workdir=work, cache_dir=args.cache_dir / "openvino", phase_s=args.seconds)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
