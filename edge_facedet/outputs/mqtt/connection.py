"""The one broker connection of the service: connect, reconnect, Last Will, node status.

`MqttConnection.run(session)` connects, hands each live connection to the `session` (the
MQTT output, which sends its retained messages and its outbox), and reconnects forever with
capped full-jitter backoff; it never raises except `CancelledError`, and every failure is
logged as one line naming the cause (errors.py), repeats at most every few minutes.

The node status `<prefix>/status` (retained) is this module's: the Last Will says `offline`;
after every connect the session's retained messages go first and then `online`, so a
subscriber that reacts to `online` already has them; `close()` flushes the session for a
bounded time and says `stopped`; a cancellation without `close()` says `offline` itself.
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
from typing import TYPE_CHECKING, Protocol, TypeVar

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge_facedet.backoff import Backoff
from edge_facedet.outputs.mqtt.client import new_client
from edge_facedet.outputs.mqtt.credentials import client_credentials
from edge_facedet.outputs.mqtt.errors import (
    Failure,
    RepeatFilter,
    WireEvents,
    describe_failure,
)
from edge_facedet.outputs.mqtt.hooks import WireHooks, watch_publish_failures
from edge_facedet.outputs.mqtt.outbox import Message
from edge_facedet.redact import redact_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping
    from pathlib import Path

    from edge_facedet.config import MqttConfig
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.errors import BrokerIdentity
    from edge_facedet.outputs.mqtt.topics import Topics

__all__ = ["Link", "MqttConnection", "Session"]

log = logging.getLogger(__name__)
# paho's own chatter (CONNECT/PUBLISH packet traces) goes to a child logger.
_paho_log = logging.getLogger(f"{__name__}.paho")

_T = TypeVar("_T")

# A connection that survived this long was a success: the next failure starts the backoff
# from the beginning instead of waiting up to reconnect_max_s.
STABLE_CONNECTION_S = 10.0
# close(): how long the session may keep flushing, and how long to wait for the PUBACK of
# `stopped`; together they bound a shutdown with a slow or dead broker.
CLOSE_FLUSH_S = 0.5
CLOSE_STATUS_TIMEOUT_S = 1.0
# A cancellation without close() publishes `offline` itself, within this time.
CANCEL_STATUS_TIMEOUT_S = 1.0
# No PUBACK within this time means the connection is not usable; reconnect.
PUBLISH_TIMEOUT_S = 10.0
# The same failure, repeated while the broker stays down, is logged again at most this often.
REPEAT_LOG_S = 300.0


class Session(Protocol):
    """What the connection's owner sends over each live connection (the MQTT output)."""

    async def reconcile(self, link: Link) -> None:
        """First thing on a connection: read what an earlier run left (`read_retained`)."""

    def on_connected(self) -> None:
        """A new connection: whatever is retained must be sent again."""

    async def send_retained(self, link: Link) -> None:
        """The retained messages that must precede `online`."""

    async def send_pending(self, link: Link) -> None:
        """Publish as messages come, until `link.closing`."""

    async def flush(self, link: Link, *, timeout_s: float) -> None:
        """At close: send what is left within `timeout_s`."""


class Link:
    """One live connection as the session sees it: publish, and whether close() was asked."""

    def __init__(
        self,
        *,
        client: aiomqtt.Client,
        broker: BrokerIdentity,
        metrics: Metrics,
        closing: asyncio.Event,
    ) -> None:
        self._client = client
        self._broker = broker
        self._metrics = metrics
        self._closing = closing
        self._rejection: ReasonCode | None = None
        # Once per topic and connection: a denied faces topic would otherwise log per frame.
        self._denied_topics: set[str] = set()
        # read_retained()'s waits, by topic; fed by the connection's message pump.
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        watch_publish_failures(client, self._record_rejection)

    async def read_retained(self, topic: str, *, timeout_s: float) -> bytes | None:
        """The message retained on `topic`, or None if none came within `timeout_s`.

        Subscribes only for the wait: the service reads nothing else from its broker.
        """
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[topic] = future

        async def subscribe_and_wait() -> bytes:
            await self._client.subscribe(topic, qos=1, timeout=timeout_s)
            return await future

        try:
            # The whole read is bounded: a broker that never answers the SUBSCRIBE must not
            # hold the session (the output then goes on without the earlier run's manifest).
            return await asyncio.wait_for(subscribe_and_wait(), timeout_s)
        except (asyncio.TimeoutError, aiomqtt.MqttError):
            return None
        finally:
            self._waiting.pop(topic, None)
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._client.unsubscribe(topic, timeout=timeout_s), timeout_s
                )

    def received(self, message: aiomqtt.Message) -> None:
        """A message from the broker (only retained reads subscribe to anything)."""
        future = self._waiting.get(message.topic.value)
        if future is not None and not future.done() and isinstance(message.payload, bytes):
            future.set_result(message.payload)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def publish(self, message: Message) -> None:
        self._rejection = None
        await self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        # Handed to the broker (QoS 0: written; QoS>=1: acknowledged), even if the ACL denied
        # it: retrying a denied message would never succeed.
        self._metrics.mqtt_published.inc()
        rejection = self._take_rejection()
        if rejection is not None:
            self._report_rejection(message.topic, rejection)

    def _take_rejection(self) -> ReasonCode | None:
        # A method, not inline: the callback sets it while publish() awaits.
        rejection, self._rejection = self._rejection, None
        return rejection

    def _record_rejection(self, reason: ReasonCode) -> None:
        # Publishes are sequential, so a rejection seen while `publish` waits belongs to it.
        self._rejection = reason

    def _report_rejection(self, topic: str, reason: ReasonCode) -> None:
        if topic in self._denied_topics:
            return
        self._denied_topics.add(topic)
        username = self._broker.username
        who = f"user {username!r}" if username else "anonymous"
        log.warning(
            "MQTT broker %s rejected a publish to %s: %s (check the broker ACL for %s)",
            self._broker.where,
            topic,
            reason,
            who,
        )


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
        self._repeats = RepeatFilter(repeat_s=REPEAT_LOG_S)
        # paho logs socket errors (e.g. the server's TLS alert) at ERROR on its own; they are
        # captured here and become the cause in our one failure line instead.
        self._socket_error: str | None = None
        self._paho_log = logging.getLogger(f"{_paho_log.name}.{broker.client_id}")
        self._paho_log.addFilter(self._capture_socket_error)

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
                logger=self._paho_log,
            )
            hooks = WireHooks(client, loop=asyncio.get_running_loop())
            async with contextlib.AsyncExitStack() as stack:
                if not await self._enter_unless_closing(stack, client, hooks):
                    return 0.0
                client.timeout = PUBLISH_TIMEOUT_S
                connected_at = time.monotonic()
                self._on_connected(session)
                await self._serve(client, session)
        except Exception as exc:  # noqa: BLE001 - run() must survive anything but cancellation
            if connected_at is not None and time.monotonic() - connected_at > STABLE_CONNECTION_S:
                # A failure after a stable connection is news; after a short one (a broker
                # that accepts and then drops us) it is the same failure again.
                self._repeats.succeeded()
            # MqttError for broker and network trouble; ConfigError/OSError/SSLError for an
            # unreadable password or certificate, which may be fixed while we retry.
            failure = describe_failure(
                exc,
                broker=self._broker,
                was_connected=connected_at is not None,
                socket_error=self._socket_error,
                wire=hooks.events() if hooks is not None else WireEvents(),
            )
            text = redact_text(failure.text, *(s for s in (password,) if s))
            self._log_failure(Failure(failure.kind, text))
        finally:
            if hooks is not None:
                hooks.release()
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
        self._socket_error = None
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
            if hooks.closed.is_set() and not self._closing.is_set():
                raise aiomqtt.MqttError("the broker closed the connection before its CONNACK")
            return False
        enter.result()  # raises the connect error
        if hooks.dropped:
            # Between the CONNACK and here: aiomqtt lost that disconnect.
            raise aiomqtt.MqttError("the broker closed the connection right after its CONNACK")
        return True

    def _capture_socket_error(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # aiomqtt's warnings ("Could not gracefully disconnect" after a broker dropped us)
        # restate a failure this module logs once, in its own words.
        if record.levelno >= logging.ERROR:
            self._socket_error = record.getMessage()
        log.debug("MQTT client: %s", record.getMessage())
        return False

    def _log_failure(self, failure: Failure) -> None:
        text = self._repeats.failed(failure, now=time.monotonic())
        if text is None:
            log.debug("%s (again)", failure.text)
        else:
            log.warning("%s", text)

    def _on_connected(self, session: Session) -> None:
        self._connected.set()
        self._metrics.mqtt_connected.set(1)
        failed = self._repeats.failures()
        if failed is not None:
            log.info("MQTT connected to %s after %d failed attempt(s)", self._broker.where, failed)
        else:
            log.info("MQTT connected to %s", self._broker.where)
        # The broker may have lost its retained store (restart without persistence).
        session.on_connected()

    async def _serve(self, client: aiomqtt.Client, session: Session) -> None:
        link = Link(
            client=client, broker=self._broker, metrics=self._metrics, closing=self._closing
        )
        lost = asyncio.create_task(_connection_lost(client, link))
        try:
            # One guard for the whole session rather than one per message: a guard is a task
            # and an asyncio.wait, and faces messages go out at the detector's rate.
            await _guarded(self._session(link, session), lost)
        except asyncio.CancelledError:
            if not self._closing.is_set() and not lost.done():
                # Cancelled without close(): a clean DISCONNECT suppresses the Will, so say
                # `offline` ourselves, or the retained status would claim `online` forever.
                offline = self._status("offline")
                with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                    await asyncio.shield(
                        client.publish(
                            offline.topic, offline.payload, qos=offline.qos, retain=True,
                            timeout=CANCEL_STATUS_TIMEOUT_S,
                        )
                    )  # fmt: skip
            raise
        finally:
            lost.cancel()
            # asyncio.wait, not `await lost` under suppress(CancelledError): that would also
            # swallow a cancellation aimed at this task while it waits here.
            await asyncio.wait((lost,))
            if not lost.cancelled():
                lost.exception()  # retrieved: the connection loss is handled by the caller

    async def _session(self, link: Link, session: Session) -> None:
        await session.reconcile(link)
        await session.send_retained(link)
        await link.publish(self._status("online"))
        await session.send_pending(link)
        # close(): flush for a bounded time, then `stopped` with QoS>=1, awaiting its PUBACK.
        await session.flush(link, timeout_s=CLOSE_FLUSH_S)
        stopped = Message(
            self._topics.status, b"stopped", max(self._config.qos.status, 1), retain=True
        )
        try:
            await asyncio.wait_for(link.publish(stopped), CLOSE_STATUS_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning(
                "MQTT broker %s did not acknowledge the `stopped` status", self._broker.where
            )

    def _status(self, status: str) -> Message:
        return Message(self._topics.status, status.encode(), self._config.qos.status, retain=True)


async def _guarded(awaitable: Awaitable[_T], lost: asyncio.Task[None]) -> _T:
    """Await `awaitable`, but raise MqttError as soon as the connection is lost.

    aiomqtt's publish() only notices a dead connection when its timeout expires.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        # Let it act on its cancellation first (a faces message in flight goes back to
        # the outbox) so the caller's clean-up sees the outbox as it is.
        await asyncio.wait((task,))
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait((task,))
    cause = lost.exception() if not lost.cancelled() else None
    raise aiomqtt.MqttError(f"connection lost: {cause}") from cause


async def _connection_lost(client: aiomqtt.Client, link: Link) -> None:
    """Finish (with MqttError) when the connection drops; hand any message to `link`.

    Only `Link.read_retained` subscribes, briefly, so the message iterator yields little;
    its end is aiomqtt's public signal for a disconnect.
    """
    async for message in client.messages:
        link.received(message)
