"""The one broker connection of the service: connect, reconnect, Last Will.

`MqttConnection.run(session)` connects, hands each live connection to the `session` (the
MQTT output, which sends its retained messages and its outbox), and reconnects forever with
capped full-jitter backoff; it never raises except `CancelledError`, and every failure is
logged as one line naming the cause (errors.py), repeats at most every few minutes.

The node status `<prefix>/status` (retained): the Last Will set here says `offline`; on each
live connection session.py sends the session's retained messages first and then `online`, so
a subscriber that reacts to `online` already has them; `close()` makes it flush the session
for a bounded time and say `stopped`; a cancellation without `close()` says `offline` itself.
MQTT v5 is used so a publish the broker's ACL denies is reported (PUBACK reason code)
instead of silently lost. hooks.py guards each client against a broken or hostile broker
(packet size limit, a CONNECT refused by closing, stale descriptors). The password is only
handed to the client; it never reaches a log line or an error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiomqtt

from edge_facedet.backoff import Backoff
from edge_facedet.outputs.mqtt.client import new_client
from edge_facedet.outputs.mqtt.credentials import client_credentials
from edge_facedet.outputs.mqtt.errors import (
    Failure,
    RepeatFilter,
    WireEvents,
    describe_failure,
)
from edge_facedet.outputs.mqtt.hooks import WireHooks
from edge_facedet.outputs.mqtt.session import (
    CLOSE_FLUSH_S,
    CLOSE_STATUS_TIMEOUT_S,
    NodeStatus,
    serve,
)
from edge_facedet.redact import redact_text

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from edge_facedet.config import MqttConfig
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.errors import BrokerIdentity
    from edge_facedet.outputs.mqtt.session import Session
    from edge_facedet.outputs.mqtt.topics import Topics

__all__ = ["FailureLog", "MqttConnection"]

log = logging.getLogger(__name__)
# paho's own chatter (CONNECT/PUBLISH packet traces) goes to a child logger.
_paho_log = logging.getLogger(f"{__name__}.paho")

# A connection that survived this long was a success: the next failure starts the backoff
# from the beginning instead of waiting up to reconnect_max_s.
STABLE_CONNECTION_S = 10.0
# No PUBACK within this time means the connection is not usable; reconnect.
PUBLISH_TIMEOUT_S = 10.0
# The same failure, repeated while the broker stays down, is logged again at most this often.
REPEAT_LOG_S = 300.0


class MqttConnection:
    """Keeps one broker connection for a `Session`; see the module docstring.

    Use from one event loop: `run(session)` is the connection task; `close()` ends it cleanly.
    """

    def __init__(
        self,
        *,
        config: MqttConfig,
        topics: Topics,
        broker: BrokerIdentity,
        metrics: Metrics,
        environ: Mapping[str, str] | None = None,
        credentials_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._topics = topics
        self._broker = broker
        self._metrics = metrics
        self._environ = environ
        self._credentials_dir = credentials_dir
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._run_done = asyncio.Event()
        self._running = False
        self._status = NodeStatus(topic=topics.status, qos=config.qos.status)
        self._failures = FailureLog(broker=broker)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the connection is (or within `timeout` seconds becomes) up."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, session: Session) -> None:
        """Connect, serve `session`, reconnect; until `close()` or cancellation."""
        if self._running:
            raise RuntimeError("MqttConnection.run() is already running")
        self._running = True
        self._run_done.clear()
        backoff = Backoff(base=self._config.reconnect_initial_s, cap=self._config.reconnect_max_s)
        try:
            while not self._closing.is_set():
                connected_for = await self._connection_attempt(session)
                if self._closing.is_set():
                    break
                if connected_for > STABLE_CONNECTION_S:
                    backoff.reset()
                delay = backoff.next_delay()
                log.debug("MQTT reconnect to %s in %.2f s", self._broker.where, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    # close() sets _closing; no point sleeping out the delay then.
                    await asyncio.wait_for(self._closing.wait(), delay)
        finally:
            self._running = False
            self._run_done.set()

    async def close(self) -> None:
        """Flush the session, publish `stopped` (retained), disconnect; idempotent.

        Makes `run()` return. Safe to call when `run()` never started or already ended.
        """
        self._closing.set()
        if not self._running:
            return
        budget = CLOSE_FLUSH_S + CLOSE_STATUS_TIMEOUT_S + 1.0
        try:
            await asyncio.wait_for(self._run_done.wait(), budget)
        except asyncio.TimeoutError:
            # Typically a connect attempt in progress; it ends at the next check or when the
            # owner cancels run(). Nothing more can be done without the broker.
            log.warning("MQTT publisher did not stop within %.1f s; giving up on it", budget)

    # -- one connection ---------------------------------------------------------------------

    async def _connection_attempt(self, session: Session) -> float:
        """One connect-and-serve; returns how long it was connected (0 if never)."""
        connected_at: float | None = None
        password: str | None = None
        hooks: WireHooks | None = None
        try:
            # Secret files and TLS key material are read per attempt, so a rotated password
            # or renewed certificate is picked up on reconnect; reading is blocking I/O.
            password, tls_context = await asyncio.to_thread(
                client_credentials,
                self._config,
                environ=self._environ,
                credentials_dir=self._credentials_dir,
            )
            client = new_client(
                config=self._config,
                client_id=self._broker.client_id,
                will_topic=self._topics.status,
                password=password,
                tls_context=tls_context,
                logger=self._failures.paho_log,
            )
            hooks = WireHooks(client, loop=asyncio.get_running_loop())
            async with contextlib.AsyncExitStack() as stack:
                if not await self._enter_unless_closing(stack, client, hooks):
                    return 0.0
                client.timeout = PUBLISH_TIMEOUT_S
                connected_at = time.monotonic()
                self._on_connected(session)
                await serve(
                    session,
                    client=client,
                    broker=self._broker,
                    metrics=self._metrics,
                    closing=self._closing,
                    status=self._status,
                    receive_maximum=hooks.receive_maximum,
                )
        except Exception as exc:  # noqa: BLE001 - run() must survive anything but cancellation
            # MqttError for broker and network trouble; ConfigError/OSError/SSLError for an
            # unreadable password or certificate, which may be fixed while we retry.
            self._failures.failed(
                exc,
                connected_at=connected_at,
                password=password,
                wire=hooks.events() if hooks is not None else WireEvents(),
            )
        finally:
            if hooks is not None and (misc := hooks.release()) is not None:
                await asyncio.wait((misc,))
            if connected_at is not None:
                self._connected.clear()
                self._metrics.mqtt_connected.set(0)
        return 0.0 if connected_at is None else time.monotonic() - connected_at

    async def _enter_unless_closing(
        self, stack: contextlib.AsyncExitStack, client: aiomqtt.Client, hooks: WireHooks
    ) -> bool:
        """Connect (enter `client` on `stack`); False if close() came first.

        The connect can take up to the connect timeout; close() must not wait for that, and
        neither must a connection the broker closed before its CONNACK (aiomqtt would).
        """
        self._failures.new_attempt()
        enter = asyncio.ensure_future(stack.enter_async_context(client))
        closing = asyncio.ensure_future(self._closing.wait())
        closed = asyncio.ensure_future(hooks.closed.wait())
        try:
            await asyncio.wait((enter, closing, closed), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            enter.cancel()
            raise
        finally:
            closing.cancel()
            closed.cancel()
        if not enter.done():
            enter.cancel()
            await asyncio.wait((enter,))
            # The connect may have failed before the cancel reached it (a refusal in the
            # CONNACK as close() came): retrieved here, or asyncio logs it when collected.
            error = None if enter.cancelled() else enter.exception()
            if self._closing.is_set():
                return False
            if error is not None:
                raise error
            if hooks.closed.is_set():
                raise aiomqtt.MqttError("the broker closed the connection before its CONNACK")
            return False
        enter.result()  # raises the connect error
        if hooks.dropped:
            # Between the CONNACK and here: aiomqtt lost that disconnect.
            raise aiomqtt.MqttError("the broker closed the connection right after its CONNACK")
        return True

    def _on_connected(self, session: Session) -> None:
        self._connected.set()
        self._metrics.mqtt_connected.set(1)
        self._failures.connected()
        # The broker may have lost its retained store (restart without persistence).
        session.on_connected()


class FailureLog:
    """A connection's failures, one warning line each, a repeat only every REPEAT_LOG_S."""

    def __init__(self, *, broker: BrokerIdentity) -> None:
        self._broker = broker
        self._repeats = RepeatFilter(repeat_s=REPEAT_LOG_S)
        # paho logs socket errors (e.g. the server's TLS alert) at ERROR on its own; they are
        # captured here and become the cause in our one failure line instead.
        self._socket_error: str | None = None
        self.paho_log = logging.getLogger(f"{_paho_log.name}.{broker.client_id}")
        self.paho_log.addFilter(self._capture_socket_error)

    def new_attempt(self) -> None:
        """A connect begins: an earlier attempt's socket error is not its cause."""
        self._socket_error = None

    def connected(self) -> None:
        failed = self._repeats.failures()
        if failed is not None:
            log.info("MQTT connected to %s after %d failed attempt(s)", self._broker.where, failed)
        else:
            log.info("MQTT connected to %s", self._broker.where)

    def failed(
        self,
        exc: Exception,
        *,
        connected_at: float | None,
        password: str | None,
        wire: WireEvents,
    ) -> None:
        """One line for the failure of an attempt, unless it repeats one logged recently."""
        if connected_at is not None and time.monotonic() - connected_at > STABLE_CONNECTION_S:
            # A failure after a stable connection is news; after a short one (a broker
            # that accepts and then drops us) it is the same failure again.
            self._repeats.succeeded()
        described = describe_failure(
            exc,
            broker=self._broker,
            was_connected=connected_at is not None,
            socket_error=self._socket_error,
            wire=wire,
        )
        secrets = (password,) if password else ()
        failure = Failure(described.kind, redact_text(described.text, *secrets))
        text = self._repeats.failed(failure, now=time.monotonic())
        if text is None:
            log.debug("%s (again)", failure.text)
        else:
            log.warning("%s", text)

    def _capture_socket_error(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # aiomqtt's warnings ("Could not gracefully disconnect" after a broker dropped us)
        # restate a failure this module logs once, in its own words.
        if record.levelno >= logging.ERROR:
            self._socket_error = record.getMessage()
        log.debug("MQTT client: %s", record.getMessage())
        return False
