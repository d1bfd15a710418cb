"""The metrics endpoint under slow, oversized and wrong requests: real sockets, real server.

Most tests run `MetricsServer` in this process with short deadlines (`FAST`), so a deadline
shows in about a second. The descriptor tests run it in a child process whose soft
RLIMIT_NOFILE is low, as the service's is under systemd (1,024), so running out of
descriptors shows with a few hundred clients instead of a thousand.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry, Counter

from edge_facedet.outputs.http import MetricsServer
from edge_facedet.outputs.httpserver import HttpLimits
from edge_facedet.outputs.metrics import HttpMetrics
from tests.support.paths import REPO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SERVER_MODULE = "edge_facedet.outputs.http"
FAST = HttpLimits(
    max_connections=8,
    request_timeout_s=1.0,
    idle_timeout_s=1.0,
    write_timeout_s=1.0,
    max_requests=3,
    protect_s=0.2,
)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Endpoint:
    server: MetricsServer
    registry: CollectorRegistry
    health: dict[str, bool] = field(default_factory=lambda: {"healthy": True})

    @property
    def port(self) -> int:
        return self.server.port

    def dropped(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "edge_facedet_http_connections_dropped_total", {"reason": reason}
        )
        return value or 0.0


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with serving(FAST) as started:
        yield started


@contextlib.contextmanager
def serving(limits: HttpLimits) -> Iterator[Endpoint]:
    registry = CollectorRegistry()
    Counter("edge_facedet_test_events", "Test events.", registry=registry).inc(3)
    metrics = HttpMetrics(registry=registry)
    state = {"healthy": True}
    server = MetricsServer(
        host="127.0.0.1",
        port=0,
        registry=registry,
        health=lambda: (state["healthy"], {"frames_flowing": state["healthy"]}),
        limits=limits,
        events=metrics,
    )
    server.start()
    try:
        yield Endpoint(server=server, registry=registry, health=state)
    finally:
        server.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket, *, head_only: bool = False) -> Answer:
    """One HTTP response from `sock` (status line, headers, Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(status=int(lines[0].split()[1]), headers=headers, body=body)


def eventually(check: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ask(port: int, raw: bytes, *, timeout: float = 5.0, head_only: bool = False) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_answer(sock, head_only=head_only)


def get(port: int, path: str, *, headers: str = "", timeout: float = 5.0) -> Answer:
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    return ask(port, raw, timeout=timeout)


def closed_by_peer(sock: socket.socket, *, timeout: float) -> bool:
    """Whether the peer closes `sock` within `timeout` (what it sends before is discarded)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return False


class SlowClients:
    """Up to `count` connections that each send a request line, then a header line every
    `interval_s`, never finishing the request: a slow-loris attack. Connecting stops at the
    third connect that times out (a server whose accept queue is full). Connects are paced
    (`pace_s`), so a server that accepts as fast as it should never sees a full queue."""

    def __init__(
        self, *, port: int, count: int, interval_s: float = 0.5, pace_s: float = 0.005
    ) -> None:
        self.sockets: list[socket.socket] = []
        self.refused = 0
        self._interval_s = interval_s
        self._stop = threading.Event()
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
            except TimeoutError:
                self.refused += 1
                if self.refused == 3:
                    break
                continue
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            self.sockets.append(sock)
            time.sleep(pace_s)
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        line = 0
        while not self._stop.wait(self._interval_s):
            line += 1
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.send(f"X-Slow-{line}: 1\r\n".encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def steady(page: bytes) -> list[bytes]:
    """A metrics page without the open-connections gauge, which the scrape itself moves."""
    return [line for line in page.splitlines() if b"edge_facedet_http_connections " not in line]


# -- behaviour kept from the wsgiref server ----------------------------------------------------


def test_metrics_answers_in_the_scrapers_format_and_gzip(endpoint: Endpoint) -> None:
    plain = get(endpoint.port, "/metrics")
    assert plain.status == 200
    assert plain.headers["content-type"] == TEXT_FORMAT
    assert b"edge_facedet_test_events_total 3.0" in plain.body
    assert steady(get(endpoint.port, "/").body) == steady(plain.body)

    zipped = get(endpoint.port, "/metrics", headers="Accept-Encoding: gzip\r\n")
    assert zipped.headers["content-encoding"] == "gzip"
    assert steady(gzip.decompress(zipped.body)) == steady(plain.body)

    accept = "Accept: application/openmetrics-text; version=1.0.0\r\n"
    openmetrics = get(endpoint.port, "/metrics", headers=accept)
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.body.endswith(b"# EOF\n")

    selected = get(endpoint.port, "/metrics?name[]=edge_facedet_test_events_total")
    assert b"edge_facedet_test_events_total 3.0" in selected.body
    assert b"edge_facedet_http_connections" not in selected.body


def test_healthz_is_200_when_healthy_and_503_when_not(endpoint: Endpoint) -> None:
    for path in ("/healthz", "/health"):
        answer = get(endpoint.port, path)
        assert (answer.status, answer.headers["content-type"]) == (200, "application/json")
        assert json.loads(answer.body) == {"healthy": True, "frames_flowing": True}
    endpoint.health["healthy"] = False
    answer = get(endpoint.port, "/healthz")
    assert answer.status == 503
    assert json.loads(answer.body) == {"healthy": False, "frames_flowing": False}


# -- methods and paths ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/nowhere"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_methods_other_than_get_and_head_get_405(
    endpoint: Endpoint, method: str, path: str
) -> None:
    answer = ask(endpoint.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"


def test_head_answers_headers_only_and_unknown_paths_get_404(endpoint: Endpoint) -> None:
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
        sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_answer(sock, head_only=True)
        assert (head.status, head.body) == (200, b"")
        assert int(head.headers["content-length"]) > 0
        # Had the body been sent, this answer would be read out of it.
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        missing = read_answer(sock)
    assert missing.status == 404
    assert missing.body == b"not found: try /metrics or /healthz\n"


def test_keep_alive_serves_requests_up_to_the_cap_then_closes(endpoint: Endpoint) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
        answers = []
        for _ in range(FAST.max_requests):
            sock.sendall(request)
            answers.append(read_answer(sock))
        assert [a.status for a in answers] == [200] * FAST.max_requests
        assert "connection" not in answers[0].headers
        assert answers[-1].headers["connection"] == "close"
        assert closed_by_peer(sock, timeout=2)


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param("".join(f"X-H{i}: 1\r\n" for i in range(80)), 431, id="80-header-lines"),
        pytest.param("".join(f"X-H{i}: {'a' * 2000}\r\n" for i in range(40)), 431, id="80KiB"),
        pytest.param(f"X-Big: {'a' * 20000}\r\n", 431, id="one-20KiB-line"),
        pytest.param(None, 414, id="20KiB-request-line"),
    ],
)
def test_an_oversized_request_head_is_refused_and_its_connection_released(
    endpoint: Endpoint, head: str | None, status: int
) -> None:
    if head is None:
        raw = f"GET /metrics?{'a' * 20000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    else:
        raw = f"GET /metrics HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
        sock.sendall(raw)
        answer = read_answer(sock)
        assert answer.status == status
        assert answer.headers["connection"] == "close"
        assert closed_by_peer(sock, timeout=2)
    assert eventually(lambda: endpoint.server.open_connections == 0, timeout=2)
    assert endpoint.dropped("bad_request") == 1


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("Content-Length: 100000\r\n", 413),
        ("Transfer-Encoding: chunked\r\n", 501),
        ("Content-Length: -1\r\n", 400),
        ("Bad Header: 1\r\n", 400),
        (" folded: 1\r\n", 400),
    ],
)
def test_bodies_and_malformed_headers_are_refused(
    endpoint: Endpoint, extra: str, status: int
) -> None:
    answer = ask(endpoint.port, f"GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    assert answer.status == status


def test_a_trickled_request_is_cut_at_the_whole_request_deadline(endpoint: Endpoint) -> None:
    """One header line every 0.2 s: a timeout per line would never fire."""
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        received = b""
        line = 0
        sock.settimeout(0.2)
        while time.monotonic() - started < FAST.request_timeout_s + 3.0:
            line += 1
            with contextlib.suppress(OSError):
                sock.sendall(f"X-Slow-{line}: 1\r\n".encode())
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if not chunk:
                break
            received += chunk
        cut_after = time.monotonic() - started
    assert FAST.request_timeout_s - 0.1 <= cut_after <= FAST.request_timeout_s + 1.5, cut_after
    assert received.startswith(b"HTTP/1.1 408 "), received[:100]
    assert endpoint.dropped("timeout") == 1


def test_slow_clients_over_the_cap_do_not_stop_metrics(endpoint: Endpoint) -> None:
    attackers = SlowClients(port=endpoint.port, count=5 * FAST.max_connections)
    try:
        # Sooner than `protect_s`: a request that is all there replaces a slow client at once.
        time.sleep(0.05)
        for _ in range(5):
            started = time.monotonic()
            answer = get(endpoint.port, "/metrics", timeout=3)
            assert answer.status == 200
            assert time.monotonic() - started < 2.0
            assert endpoint.server.open_connections <= FAST.max_connections
    finally:
        attackers.close()
    assert endpoint.dropped("over_cap") + endpoint.dropped("evicted") >= 4 * FAST.max_connections


def test_over_the_cap_a_whole_request_takes_the_place_of_a_slow_client() -> None:
    """Every slot held by a slow client younger than `protect_s`: a newcomer that sends
    nothing is closed within the probation, one whose whole request follows its connect
    (10 ms later, after the accept) is answered."""
    limits = HttpLimits(max_connections=4, protect_s=30.0)
    with serving(limits) as endpoint:
        attackers = SlowClients(port=endpoint.port, count=limits.max_connections)
        try:
            assert eventually(lambda: endpoint.server.open_connections == 4, timeout=2)
            with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as late:
                assert closed_by_peer(late, timeout=2)
            # Counted just after the close the client saw.
            assert eventually(lambda: endpoint.dropped("over_cap") == 1, timeout=1)
            with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as scraper:
                time.sleep(0.01)
                scraper.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_answer(scraper).status == 200
            assert endpoint.dropped("evicted") == 1
        finally:
            attackers.close()


# -- descriptors, in a child process with few of them ------------------------------------------

CHILD = """
import importlib, resource, sys
from prometheus_client import CollectorRegistry, Counter
soft = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
registry = CollectorRegistry()
Counter("edge_facedet_test_events", "Test events.", registry=registry).inc()
server = importlib.import_module(sys.argv[1]).MetricsServer(
    host="127.0.0.1", port=0, registry=registry, health=lambda: (True, {}))
server.start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""


@contextlib.contextmanager
def child_server(*, nofile: int) -> Iterator[tuple[int, int]]:
    """(pid, port) of a MetricsServer in a child process limited to `nofile` descriptors."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, SERVER_MODULE, str(nofile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            yield child.pid, port
        finally:
            child.kill()


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_slow_clients_cannot_take_the_processes_descriptors() -> None:
    """250 slow clients against a process allowed 160 descriptors: with a thread and a
    descriptor per client it runs out, and /metrics stops answering."""
    with child_server(nofile=160) as (pid, port):
        baseline = fd_count(pid)
        attackers = SlowClients(port=port, count=250)
        try:
            time.sleep(1.0)
            for _ in range(3):
                assert get(port, "/metrics", timeout=3).status == 200
            assert fd_count(pid) <= baseline + HttpLimits().max_connections + 2
        finally:
            attackers.close()


def test_running_out_of_descriptors_does_not_spin_and_recovers() -> None:
    """A process already short of descriptors (40 allowed, under the cap of 64): accepting
    fails, which must neither busy-loop nor stop the endpoint once clients leave."""
    with child_server(nofile=40) as (pid, port):
        attackers = SlowClients(port=port, count=80)
        try:
            time.sleep(0.5)
            before = cpu_s(pid)
            time.sleep(2.0)
            used = cpu_s(pid) - before
        finally:
            attackers.close()
        assert used < 0.5, f"{used:.2f} s of CPU in 2 s while out of descriptors"
        deadline = time.monotonic() + 10.0
        while True:
            with contextlib.suppress(OSError):
                if get(port, "/metrics", timeout=2).status == 200:
                    break
            assert time.monotonic() < deadline, "no answer within 10 s of the clients leaving"
            time.sleep(0.2)
