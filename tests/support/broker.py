"""MQTT test infrastructure: real Mosquitto brokers, a collecting subscriber, a TCP gate.

Fixtures:
* `mqtt_broker` - the system broker on 127.0.0.1:1883, or a private one if that is down;
  at the end of the session it deletes the retained messages the tests' nodes left there
  (under pytest-xdist, the controller does, once every worker is done).
* `private_broker` - a factory for Mosquitto processes of our own (password file, ACL, TLS
  with trustme certificates), which tests may kill, stop and restart on the same port.

Helpers: `mqtt_subscriber` (collects a topic filter's messages, `wait_for(predicate)`),
`TcpGate` (a port that refuses connections until opened, then forwards to a broker; it lets
a test subscribe *before* the code under test can reach the broker) and `FakeBroker` (a
server that speaks just enough MQTT to misbehave: closes, stays silent, sends garbage).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.net import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

MOSQUITTO = "/usr/sbin/mosquitto"
SYSTEM_HOST = "127.0.0.1"
SYSTEM_PORT = 1883


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """PEM files from a trustme CA: the server's (127.0.0.1, localhost) and a client's."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path, *, name: str = "ca") -> TlsFiles:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("edge-facedet-test-client")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_file=directory / f"{name}.pem",
        server_cert=directory / f"{name}-server.pem",
        server_key=directory / f"{name}-server.key",
        client_cert=directory / f"{name}-client.pem",
        client_key=directory / f"{name}-client.key",
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(files.server_cert), append=True)
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    return files


@dataclass
class MosquittoBroker:
    """One private Mosquitto process with a generated config, restartable on its port."""

    directory: Path
    port: int
    users: dict[str, str] | None = None
    acl: str | None = None
    tls: TlsFiles | None = None
    require_certificate: bool = False
    allow_anonymous: bool | None = None
    host: str = "127.0.0.1"
    extra: tuple[str, ...] = ()
    """More mosquitto.conf lines, e.g. `max_inflight_messages 5`."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file = self.directory / "mosquitto.conf"
        self.log_file = self.directory / "mosquitto.log"
        lines = [
            f"listener {self.port} {self.host}",
            # Running as root, Mosquitto would switch to the `mosquitto` user, which cannot
            # read pytest's 0700 tmp dirs.
            "user root",
            "persistence false",
            "log_dest stderr",
            "log_type all",
        ]
        lines += self.extra
        allow_anonymous = self.allow_anonymous
        if allow_anonymous is None:
            allow_anonymous = self.users is None
        lines.append(f"allow_anonymous {'true' if allow_anonymous else 'false'}")
        if self.users is not None:
            password_file = self.directory / "passwd"
            password_file.touch(mode=0o600)
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                )
            lines.append(f"password_file {password_file}")
        if self.acl is not None:
            acl_file = self.directory / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10.0) -> None:
        """Start (again) with the same port and config; returns once the port accepts."""
        if self.running:
            return
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_file)], stdout=log, stderr=log
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, connections just die."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: Mosquitto's clean shutdown."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Factory: `private_broker(users=..., acl=..., tls=..., start=True)`; killed at teardown."""
    brokers: list[MosquittoBroker] = []

    def make(*, start: bool = True, port: int | None = None, **options: Any) -> MosquittoBroker:
        directory = tmp_path / f"broker-{len(brokers)}"
        broker = MosquittoBroker(
            directory=directory, port=port if port is not None else free_port(), **options
        )
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int


# The nodes and prefixes tests create (`<kind>-<random hex>`, and test_prometheus's fixed
# one). Their retained messages (status, camera states, Home Assistant discovery) would
# otherwise pile up in the machine's broker, run after run.
_TEST_NODE = re.compile(r"(?:(?:test|fault|ha|ha-off|ha-svc)-[0-9a-f]{8,}|prom-e2e)")
_TEST_TOPIC = re.compile(
    rf"(?:edge-facedet/{_TEST_NODE.pattern}/"
    r"|test-edge-facedet/[0-9a-f]{12}/"
    rf"|homeassistant/[a-z_]+/{_TEST_NODE.pattern}_)"
)


def delete_retained(
    address: BrokerAddress,
    *,
    filters: Sequence[str],
    selected: Callable[[str], bool] = lambda _topic: True,
    settle_s: float = 1.0,
) -> int:
    """Delete the retained messages under `filters` whose topic is `selected`; how many.

    Retained messages arrive at once on subscribing; an empty retained payload deletes one.
    """
    topics: set[str] = set()
    lock = threading.Lock()

    def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain and message.payload and selected(message.topic):
            with lock:
                topics.add(message.topic)

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"delete-retained-{uuid.uuid4().hex[:8]}",
    )
    client.on_message = on_message
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for topic_filter in filters:
            client.subscribe(topic_filter, qos=1)
        time.sleep(settle_s)
        with lock:
            found = sorted(topics)
        for topic in found:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=5.0)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(found)


def delete_test_retained(address: BrokerAddress) -> int:
    """Delete the retained messages left under test nodes; how many were deleted."""
    return delete_retained(
        address,
        filters=("edge-facedet/#", "test-edge-facedet/#", "homeassistant/#"),
        selected=lambda topic: _TEST_TOPIC.match(topic) is not None,
    )


def _parallel() -> bool:
    """Whether this session is one of several pytest-xdist workers."""
    return os.environ.get("PYTEST_XDIST_WORKER") is not None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, the controller sweeps the system broker once every worker is done:
    a worker that swept at its own end would delete the retained messages of the tests the
    other workers still run."""
    controller = not hasattr(session.config, "workerinput")
    parallel = session.config.getoption("numprocesses", default=None)
    if parallel and controller and _accepts(SYSTEM_HOST, SYSTEM_PORT):
        delete_test_retained(BrokerAddress(SYSTEM_HOST, SYSTEM_PORT))


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerAddress]:
    """The system broker; a private one when 127.0.0.1:1883 is not reachable.

    On the system broker, the retained messages the tests' nodes left are deleted at the end.
    """
    if _accepts(SYSTEM_HOST, SYSTEM_PORT):
        address = BrokerAddress(SYSTEM_HOST, SYSTEM_PORT)
        yield address
        if not _parallel():
            delete_test_retained(address)
        return
    broker = MosquittoBroker(directory=tmp_path_factory.mktemp("mqtt-broker"), port=free_port())
    broker.start()
    try:
        yield BrokerAddress(broker.host, broker.port)
    finally:
        broker.kill()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Collector:
    """Messages received so far, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._changed = asyncio.Event()
        self.disconnected = False

    def add(self, message: Received) -> None:
        self.messages.append(message)
        self._changed.set()

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0
    ) -> list[Received]:
        """Wait until `predicate(messages)` holds; AssertionError with the messages if not."""
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = [(m.topic, m.payload[:80], m.qos, m.retain) for m in self.messages[-20:]]
                raise AssertionError(f"condition not met within {timeout} s; last: {shown}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.messages


@contextlib.asynccontextmanager
async def mqtt_subscriber(
    topic_filter: str | tuple[str, ...],
    *,
    host: str,
    port: int,
    qos: int = 2,
    **client_options: Any,
) -> AsyncIterator[Collector]:
    """Subscribe (before yielding) and collect until exit; survives the broker dying.

    Several filters share one client, so their messages keep the broker's order.
    """
    collector = Collector()
    filters = (topic_filter,) if isinstance(topic_filter, str) else topic_filter
    async with aiomqtt.Client(host, port, **client_options) as client:
        for one_filter in filters:
            await client.subscribe(one_filter, qos=qos)

        async def pump() -> None:
            try:
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, str):
                        payload = payload.encode()
                    if not isinstance(payload, bytes | bytearray):
                        payload = str(payload).encode()
                    collector.add(
                        Received(str(message.topic), bytes(payload), message.qos, message.retain)
                    )
            except aiomqtt.MqttError:
                collector.disconnected = True

        task = asyncio.create_task(pump())
        try:
            yield collector
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TcpGate:
    """A port that refuses connections until `open()`, then forwards them to `target`.

    Tests use it to subscribe directly on a broker before the code under test (connected
    through the gate) can reach it. `close()` stops listening and cuts the forwarded
    connections; `hold_replies()` freezes the broker -> client direction, so acknowledgements
    stay pending (until `release_replies()` or `close()`); `reply_delay_s` delays that
    direction by a fixed time, as a broker half a round trip away would. `hold_requests()`
    stops reading the client -> broker direction, so the client's socket fills (until
    `release_requests()`); `receive_buffer` caps the gate's own socket buffer for that
    direction, so what fills is the client's send buffer, not the gate's.
    """

    def __init__(
        self,
        *,
        target_host: str,
        target_port: int,
        reply_delay_s: float = 0.0,
        receive_buffer: int | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self._reply_delay_s = reply_delay_s
        self._receive_buffer = receive_buffer
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._replies = asyncio.Event()
        self._replies.set()
        self._requests = asyncio.Event()
        self._requests.set()

    def hold_replies(self) -> None:
        """Stop forwarding broker -> client (PUBACKs stay pending) until `release_replies()`."""
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def hold_requests(self) -> None:
        """Stop reading client -> broker: the kernel's buffers fill, then the client's writes
        block (until `release_requests()`)."""
        self._requests.clear()

    def release_requests(self) -> None:
        self._requests.set()

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        # A held pipe would never notice the abort; its data now goes nowhere.
        self._replies.set()
        self._requests.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if server is not None:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        if self._receive_buffer is not None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, replies: bool
        ) -> None:
            delayed: list[asyncio.TimerHandle] = []
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    # Held, the reader's buffer fills, it stops reading, the kernel's fill.
                    await (self._replies if replies else self._requests).wait()
                    if replies and self._reply_delay_s > 0:
                        # Scheduled, not slept: what arrives meanwhile is not delayed twice.
                        loop = asyncio.get_running_loop()
                        delayed.append(loop.call_later(self._reply_delay_s, dst.write, data))
                        continue
                    dst.write(data)
                    await dst.drain()
            for handle in delayed:
                handle.cancel()  # not written into the aborted transport
            dst.transport.abort()

        try:
            await asyncio.gather(
                pipe(reader, up_writer, replies=False), pipe(up_reader, writer, replies=True)
            )
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._tasks.discard(task)


def python_env() -> dict[str, str]:
    """The environment for a child Python process that imports this repository."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    return env


# -- fake brokers: just enough MQTT to misbehave ------------------------------------------

# MQTT 5 CONNACK: session present 0, reason Success, no properties.
CONNACK_ACCEPTED = bytes([0x20, 0x03, 0x00, 0x00, 0x00])


def remaining_length(size: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length (up to 268,435,455)."""
    out = bytearray()
    while True:
        size, digit = divmod(size, 128)
        out.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(out)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet from `reader`: (first byte, body). IncompleteReadError at EOF."""
    first = (await reader.readexactly(1))[0]
    size, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(size)


@dataclass
class FakeConnection:
    """What one connection to a `FakeBroker` saw."""

    connect: bytes = b""
    sent: int = 0
    peer_closed: bool = False
    packets: list[int] = field(default_factory=list)


class FakeBroker:
    """A loopback TCP server whose every connection runs `script(reader, writer, record)`.

    The script usually reads the CONNECT (`read_packet`) and then misbehaves: closes, stays
    silent, sends garbage or a huge packet. `connections` records each one; the server
    closes the connection when the script returns.
    """

    def __init__(
        self,
        script: Callable[
            [asyncio.StreamReader, asyncio.StreamWriter, FakeConnection], Awaitable[None]
        ],
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.connections: list[FakeConnection] = []
        self._script = script
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        """Connections whose script still runs (the client has not closed them)."""
        return len(self._tasks)

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        record = FakeConnection()
        self.connections.append(record)
        try:
            await self._script(reader, writer, record)
        except (OSError, asyncio.IncompleteReadError):
            record.peer_closed = True
        except asyncio.CancelledError:
            # Cancelled by __aexit__: ending the handler task cancelled would make asyncio's
            # stream callback log a traceback, which the tests check the log for.
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)


async def read_connect(reader: asyncio.StreamReader, record: FakeConnection) -> None:
    """Read the client's CONNECT into `record.connect`."""
    first, body = await read_packet(reader)
    assert first == 0x10, f"expected CONNECT, got {first:#x}"
    record.connect = body


async def stream_zeros(
    writer: asyncio.StreamWriter, record: FakeConnection, *, limit: int, chunk: int = 65536
) -> None:
    """Write zeros until the peer closes or `limit` bytes went out; counted in `record.sent`."""
    block = bytes(chunk)
    while record.sent < limit:
        writer.write(block)
        await writer.drain()
        record.sent += chunk


async def until_closed(reader: asyncio.StreamReader, record: FakeConnection) -> None:
    """Wait for the client to close the connection (EOF or reset); sets `peer_closed`."""
    with contextlib.suppress(OSError):
        await reader.read()
    record.peer_closed = True
