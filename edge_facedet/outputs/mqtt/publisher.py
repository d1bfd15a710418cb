"""The MQTT connection: node status, retained camera states and the bounded faces outbox.

Owns the one broker connection of the service and everything sent over it:

* `<prefix>/status` (retained): `online` after every connect, `offline` as the Last Will
  (and on an unplanned cancellation), `stopped` from `close()`.
* `<prefix>/cameras/<id>/state` (retained): the latest state per camera, re-sent after every
  reconnect so a broker that lost its retained store is repaired.
* Extra retained messages from `set_retained` (Home Assistant discovery, see
  homeassistant.py): published after every connect *before* `online`, so a subscriber that
  reacts to `online` already has them.
* `<prefix>/cameras/<id>/faces`: FIFO from a bounded outbox; when it is full the oldest
  message is dropped and counted, so a dead broker costs memory of `outbox_size` messages
  at most and never slows the detector down.

`run()` reconnects forever with capped full-jitter backoff and never raises except
`CancelledError`; failures are logged as one line naming the cause. MQTT v5 is used so a
publish the broker's ACL denies is reported (PUBACK reason code) instead of silently lost.
The password is only handed to the client; it never reaches a log line or an error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from edge_facedet.backoff import Backoff
from edge_facedet.outputs.mqtt.homeassistant import discovery_messages
from edge_facedet.redact import redact_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig, MqttConfig
    from edge_facedet.outputs.metrics import Metrics

__all__ = ["MqttPublisher"]

_log = logging.getLogger(__name__)
# paho's own chatter (CONNECT/PUBLISH packet traces) goes to a child logger.
_paho_log = logging.getLogger(f"{__name__}.paho")

_T = TypeVar("_T")

# A connection that survived this long was a success: the next failure starts the backoff
# from the beginning instead of waiting up to reconnect_max_s.
_STABLE_CONNECTION_S = 10.0
# close(): how long to keep draining the outbox, and how long to wait for the PUBACK of
# `stopped`; together they bound a shutdown with a slow or dead broker.
_CLOSE_FLUSH_S = 0.5
_CLOSE_STATUS_TIMEOUT_S = 1.0
# A cancellation without close() publishes `offline` itself, within this time.
_CANCEL_STATUS_TIMEOUT_S = 1.0
# No PUBACK within this time means the connection is not usable; reconnect.
_PUBLISH_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5.0
# The same failure, repeated while the broker stays down, is logged again at most this often.
_REPEAT_LOG_S = 300.0


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


class _PublishRejectedError(Exception):
    """The broker answered a QoS>=1 publish with a failure reason code (MQTT v5)."""

    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(str(reason))
        self.reason = reason


class MqttPublisher:
    """Publishes the service's messages to one broker; see the module docstring.

    Use from one event loop: `publish_faces`, `set_camera_state` and `set_retained` are
    synchronous and never block; `run()` is the connection task; `close()` ends it cleanly.
    """

    def __init__(
        self,
        *,
        config: MqttConfig,
        node_id: str,
        metrics: Metrics,
        environ: Mapping[str, str] | None = None,
        credentials_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._node_id = node_id
        self._metrics = metrics
        self._environ = environ
        self._credentials_dir = credentials_dir
        self._prefix = config.topic_prefix or f"edge-facedet/{node_id}"
        self._client_id = config.client_id or f"edge-facedet-{node_id}"
        self._where = f"{config.host}:{config.effective_port}"
        self._outbox: deque[_Message] = deque(maxlen=config.outbox_size)
        self._states: dict[str, bytes] = {}
        # Camera ids whose latest state the broker has not acknowledged yet (insertion order).
        self._unsent_states: dict[str, None] = {}
        # set_retained(): topic -> message, and the topics not yet sent on this connection.
        self._retained: dict[str, _Message] = {}
        self._unsent_retained: dict[str, None] = {}
        self._wakeup = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._run_done = asyncio.Event()
        self._running = False
        self._last_failure: str | None = None
        self._last_failure_logged = 0.0
        self._failures_since_log = 0
        self._denied_topics: set[str] = set()
        self._rejection: ReasonCode | None = None
        # paho logs socket errors (e.g. the server's TLS alert) at ERROR on its own; they are
        # captured here and become the cause in our one failure line instead.
        self._socket_error: str | None = None
        self._paho_log = logging.getLogger(f"{_paho_log.name}.{self._client_id}")
        self._paho_log.addFilter(self._capture_socket_error)

    # -- topics and state -------------------------------------------------------------------

    @property
    def topic_prefix(self) -> str:
        return self._prefix

    def topic(self, *parts: str) -> str:
        """`<prefix>/<part>/<part>...`; parts must not contain wildcards or slashes."""
        for part in parts:
            if not part or any(ch in part for ch in "/#+\0"):
                raise ValueError(f"invalid topic level {part!r}")
        return "/".join((self._prefix, *parts))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def outbox_len(self) -> int:
        """Faces messages waiting for the broker."""
        return len(self._outbox)

    def publish_faces(self, *, camera_id: str, payload: bytes) -> None:
        """Queue a faces message; never blocks. A full outbox drops (and counts) its oldest."""
        message = _Message(self.topic("cameras", camera_id, "faces"), payload, self._qos_faces)
        self._enqueue(message)
        self._wakeup.set()

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        """Set a camera's retained state; only the latest is kept, and re-sent on reconnect."""
        self.topic("cameras", camera_id, "state")  # rejects a camera id that breaks topics
        self._states[camera_id] = payload
        self._unsent_states[camera_id] = None
        self._wakeup.set()

    def set_retained(self, *, topic: str, payload: bytes, qos: int) -> None:
        """Keep `payload` retained on `topic` (any topic, not only under the prefix).

        Sent after every connect before `online`, and at once if connected now; a later call
        for the same topic replaces the message.
        """
        if not topic or any(ch in topic for ch in "#+\0") or topic.startswith("$"):
            raise ValueError(f"invalid topic {topic!r}")
        self._retained[topic] = _Message(topic, payload, qos, retain=True)
        self._unsent_retained[topic] = None
        self._wakeup.set()

    def announce_cameras(self, *, cameras: Sequence[CameraConfig]) -> None:
        """Home Assistant discovery for `cameras`, if `mqtt.home_assistant_discovery` is on."""
        if not self._config.home_assistant_discovery:
            return
        for message in discovery_messages(
            node_id=self._node_id, topic_prefix=self._prefix, cameras=cameras
        ):
            self.set_retained(
                topic=message.topic, payload=message.payload, qos=self._config.qos.state
            )

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the publisher is (or within `timeout` seconds becomes) connected."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def _qos_faces(self) -> int:
        return self._config.qos.faces

    def _enqueue(self, message: _Message) -> None:
        if len(self._outbox) == self._outbox.maxlen:
            self._metrics.mqtt_dropped.inc()  # deque(maxlen) drops the oldest on append
        self._outbox.append(message)

    def _requeue(self, message: _Message) -> None:
        """Put back a message whose publish failed: it is the oldest, so it goes first."""
        if len(self._outbox) == self._outbox.maxlen:
            # Full: under drop-oldest this message is the one to drop (appendleft on a full
            # deque would silently drop the newest instead).
            self._metrics.mqtt_dropped.inc()
            return
        self._outbox.appendleft(message)

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect; until `close()` or cancellation. Raises nothing else."""
        if self._running:
            raise RuntimeError("MqttPublisher.run() is already running")
        self._running = True
        self._run_done.clear()
        backoff = Backoff(base=self._config.reconnect_initial_s, cap=self._config.reconnect_max_s)
        try:
            while not self._closing.is_set():
                connected_for = await self._connection_attempt()
                if self._closing.is_set():
                    break
                if connected_for > _STABLE_CONNECTION_S:
                    backoff.reset()
                delay = backoff.next_delay()
                _log.debug("MQTT reconnect to %s in %.2f s", self._where, delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    # close() sets _closing; no point sleeping out the delay then.
                    await asyncio.wait_for(self._closing.wait(), delay)
        finally:
            self._running = False
            self._run_done.set()

    async def close(self) -> None:
        """Publish `stopped` (retained), flush what fits in ~1 s, disconnect; idempotent.

        Makes `run()` return. Safe to call when `run()` never started or already ended.
        """
        self._closing.set()
        self._wakeup.set()
        if not self._running:
            return
        budget = _CLOSE_FLUSH_S + _CLOSE_STATUS_TIMEOUT_S + 1.0
        try:
            await asyncio.wait_for(self._run_done.wait(), budget)
        except asyncio.TimeoutError:
            # Typically a connect attempt in progress; it ends at the next check or when the
            # owner cancels run(). Nothing more can be done without the broker.
            _log.warning("MQTT publisher did not stop within %.1f s; giving up on it", budget)

    # -- one connection ---------------------------------------------------------------------

    async def _connection_attempt(self) -> float:
        """One connect-and-serve; returns how long it was connected (0 if never)."""
        connected_at: float | None = None
        password: str | None = None
        try:
            # Secret files and TLS key material are read per attempt, so a rotated password
            # or renewed certificate is picked up on reconnect; reading is blocking I/O.
            password, tls_context = await asyncio.to_thread(self._credentials)
            client = aiomqtt.Client(
                self._config.host,
                self._config.effective_port,
                identifier=self._client_id,
                username=self._config.username,
                password=password,
                logger=self._paho_log,
                protocol=aiomqtt.ProtocolVersion.V5,
                # v5 "clean start" with the default session expiry of 0 is 3.1.1's clean
                # session: the broker keeps nothing for us; the outbox is our queue.
                clean_start=True,
                will=aiomqtt.Will(
                    self.topic("status"), b"offline", qos=self._config.qos.status, retain=True
                ),
                keepalive=self._config.keepalive_s,
                tls_context=tls_context,
                # Bounds the wait for CONNACK (a broker that drops us during the TLS
                # handshake never sends one); raised to the publish timeout once connected.
                timeout=_CONNECT_TIMEOUT_S,
            )
            async with contextlib.AsyncExitStack() as stack:
                if not await self._enter_unless_closing(stack, client):
                    return 0.0
                client.timeout = _PUBLISH_TIMEOUT_S
                connected_at = time.monotonic()
                self._on_connected()
                await self._serve(client)
        except Exception as exc:  # noqa: BLE001 - run() must survive anything but cancellation
            # MqttError for broker and network trouble; ConfigError/OSError/SSLError for an
            # unreadable password or certificate, which may be fixed while we retry.
            self._report_failure(exc, password=password, was_connected=connected_at is not None)
        finally:
            if connected_at is not None:
                self._on_disconnected()
        return 0.0 if connected_at is None else time.monotonic() - connected_at

    async def _enter_unless_closing(
        self, stack: contextlib.AsyncExitStack, client: aiomqtt.Client
    ) -> bool:
        """Connect (enter `client` on `stack`); False if close() came first.

        The connect can take up to the connect timeout; close() must not wait for that.
        """
        self._socket_error = None
        enter = asyncio.ensure_future(stack.enter_async_context(client))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((enter, closing), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            enter.cancel()
            raise
        finally:
            closing.cancel()
        if not enter.done():
            enter.cancel()
            await asyncio.wait((enter,))
            return False
        enter.result()  # raises the connect error
        return True

    def _capture_socket_error(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self._socket_error = record.getMessage()
        _log.debug("MQTT client: %s", self._socket_error)
        return False

    def _credentials(self) -> tuple[str | None, ssl.SSLContext | None]:
        """(password, TLS context) for one connect attempt; runs in a worker thread."""
        password = self._password()
        tls_context = self._tls_context() if self._config.tls.enabled else None
        return password, tls_context

    def _password(self) -> str | None:
        if self._config.password is None:
            return None
        return self._config.password.reveal(
            environ=self._environ, credentials_dir=self._credentials_dir
        )

    def _tls_context(self) -> ssl.SSLContext:
        tls = self._config.tls
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
        if tls.insecure:  # config validation already required allow_insecure for this
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _on_connected(self) -> None:
        self._connected.set()
        self._metrics.mqtt_connected.set(1)
        self._denied_topics.clear()
        if self._last_failure is not None:
            _log.info(
                "MQTT connected to %s after %d failed attempt(s)",
                self._where,
                self._failures_since_log,
            )
        else:
            _log.info("MQTT connected to %s", self._where)
        self._last_failure = None
        self._failures_since_log = 0
        # The broker may have lost its retained store (restart without persistence).
        for camera_id in self._states:
            self._unsent_states[camera_id] = None
        self._unsent_retained = dict.fromkeys(self._retained)

    def _on_disconnected(self) -> None:
        self._connected.clear()
        self._metrics.mqtt_connected.set(0)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._watch_publish_results(client)
        lost = asyncio.create_task(self._connection_lost(client))
        try:
            # One guard for the whole session rather than one per message: a guard is a task
            # and an asyncio.wait, and faces messages go out at the detector's rate.
            await self._guarded(self._session(client), lost)
        except asyncio.CancelledError:
            if not self._closing.is_set() and not lost.done():
                # Cancelled without close(): a clean DISCONNECT suppresses the Will, so say
                # `offline` ourselves, or the retained status would claim `online` forever.
                with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                    await asyncio.shield(
                        client.publish(
                            self.topic("status"),
                            b"offline",
                            qos=self._config.qos.status,
                            retain=True,
                            timeout=_CANCEL_STATUS_TIMEOUT_S,
                        )
                    )
            raise
        finally:
            lost.cancel()
            # asyncio.wait, not `await lost` under suppress(CancelledError): that would also
            # swallow a cancellation aimed at this task while it waits here.
            await asyncio.wait((lost,))
            if not lost.cancelled():
                lost.exception()  # retrieved: the connection loss is handled by the caller

    async def _session(self, client: aiomqtt.Client) -> None:
        await self._publish_unsent_retained(client)
        await self._publish(client, self._status("online"))
        await self._drain(client)
        await self._finish(client)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """States first (they are few and describe the present), then the outbox, FIFO."""
        while not self._closing.is_set():
            if self._unsent_retained:
                await self._publish_unsent_retained(client)
            elif self._unsent_states:
                await self._publish_next_state(client)
            elif self._outbox:
                await self._publish_next_face(client)
            else:
                # Cleared only here, with both queues seen empty; publish_faces sets it after
                # appending, and everything runs on one loop, so no wake-up is lost.
                self._wakeup.clear()
                await self._wakeup.wait()

    async def _finish(self, client: aiomqtt.Client) -> None:
        """close(): flush for a bounded time, then `stopped` with QoS>=1, awaiting its PUBACK."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flush(client), _CLOSE_FLUSH_S)
        if self._outbox:
            _log.info("MQTT closing with %d faces message(s) unsent", len(self._outbox))
        stopped = _Message(
            self.topic("status"), b"stopped", max(self._config.qos.status, 1), retain=True
        )
        try:
            await asyncio.wait_for(self._publish(client, stopped), _CLOSE_STATUS_TIMEOUT_S)
        except asyncio.TimeoutError:
            _log.warning("MQTT broker %s did not acknowledge the `stopped` status", self._where)

    async def _flush(self, client: aiomqtt.Client) -> None:
        while self._unsent_states or self._outbox:
            if self._unsent_states:
                await self._publish_next_state(client)
            else:
                await self._publish_next_face(client)

    async def _publish_next_state(self, client: aiomqtt.Client) -> None:
        camera_id = next(iter(self._unsent_states))
        payload = self._states[camera_id]
        message = _Message(
            self.topic("cameras", camera_id, "state"),
            payload,
            self._config.qos.state,
            retain=True,
        )
        await self._publish(client, message)
        # A newer state set while this one was in flight stays unsent.
        if self._states.get(camera_id) is payload:
            self._unsent_states.pop(camera_id, None)

    async def _publish_unsent_retained(self, client: aiomqtt.Client) -> None:
        while self._unsent_retained:
            topic = next(iter(self._unsent_retained))
            message = self._retained[topic]
            await self._publish(client, message)
            # A replacement set while this one was in flight stays unsent.
            if self._retained.get(topic) is message:
                self._unsent_retained.pop(topic, None)

    async def _publish_next_face(self, client: aiomqtt.Client) -> None:
        message = self._outbox.popleft()
        try:
            await self._publish(client, message)
        except BaseException:
            # Not acknowledged (connection lost, timeout, cancelled): keep it for the next
            # connection. With QoS 1 that may duplicate it; subscribers dedupe on event_id.
            self._requeue(message)
            raise

    async def _publish(self, client: aiomqtt.Client, message: _Message) -> None:
        self._rejection = None
        await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        # Handed to the broker (QoS 0: written; QoS>=1: acknowledged), even if the ACL denied
        # it: retrying a denied message would never succeed.
        self._metrics.mqtt_published.inc()
        rejection = self._take_rejection()
        if rejection is not None:
            self._report_rejection(message.topic, rejection)

    def _take_rejection(self) -> ReasonCode | None:
        rejection, self._rejection = self._rejection, None
        return rejection

    def _watch_publish_results(self, client: aiomqtt.Client) -> None:
        """Record PUBACK failure reason codes, which aiomqtt's publish() does not surface.

        Uses the paho client inside aiomqtt (no public hook exists). Publishes are sequential,
        so a rejection seen while `_publish` waits belongs to that message.
        """
        paho = getattr(client, "_client", None)
        original = getattr(paho, "on_publish", None)
        if paho is None or original is None:
            return

        def on_publish(*args: Any) -> None:
            reason = args[3] if len(args) > 3 else None
            if isinstance(reason, ReasonCode) and reason.is_failure:
                self._rejection = reason
            original(*args)

        paho.on_publish = on_publish

    async def _guarded(self, awaitable: Awaitable[_T], lost: asyncio.Task[None]) -> _T:
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

    @staticmethod
    async def _connection_lost(client: aiomqtt.Client) -> None:
        """Finish (with MqttError) when the connection drops.

        Nothing is subscribed, so the message iterator yields nothing; its end is aiomqtt's
        public signal for a disconnect.
        """
        async for _ in client.messages:
            pass

    def _status(self, status: str) -> _Message:
        return _Message(self.topic("status"), status.encode(), self._config.qos.status, retain=True)

    # -- reporting --------------------------------------------------------------------------

    def _report_failure(
        self, exc: BaseException, *, password: str | None, was_connected: bool
    ) -> None:
        kind, text = self._describe(exc, was_connected=was_connected)
        text = redact_text(text, *(s for s in (password,) if s))
        self._failures_since_log += 1
        now = time.monotonic()
        if kind == self._last_failure and now - self._last_failure_logged < _REPEAT_LOG_S:
            _log.debug("%s (again)", text)
            return
        if kind == self._last_failure:
            text += f" ({self._failures_since_log} attempts so far)"
        self._last_failure = kind
        self._last_failure_logged = now
        _log.warning("%s", text)

    def _describe(self, exc: BaseException, *, was_connected: bool) -> tuple[str, str]:
        """(failure kind, one-line explanation naming the cause) for a connection failure."""
        where = f"MQTT broker {self._where}"
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, MqttConnectError):
            return self._describe_refusal(exc, where=where)
        if was_connected:
            return "lost", f"lost the connection to {where}: {detail}"
        if not isinstance(exc, aiomqtt.MqttError | ssl.SSLError):
            # Raised before any network traffic: the password source or a TLS file.
            return f"local:{type(exc).__name__}", (
                f"cannot prepare the connection to {where}: {type(exc).__name__}: {detail} "
                "(check mqtt.password and the mqtt.tls files)"
            )
        if self._socket_error is not None and "timed out" in detail.lower():
            # No CONNACK because the connection died first: the socket error is the cause.
            detail = self._socket_error
        low = detail.lower()
        if isinstance(exc, ssl.SSLError) or any(w in low for w in ("certificate", "ssl", "tls")):
            return "tls", (
                f"TLS handshake with {where} failed: {detail} (check mqtt.tls.ca_file, "
                "the server certificate's host names and the client certificate)"
            )
        # aiomqtt turns socket errors into MqttError(str(error)), so the text is all there is.
        hints = (
            ("connection refused", "down", f"{where} refused the TCP connection; is it running?"),
            ("name or service", "dns", f"cannot resolve MQTT host {self._config.host!r}"),
            ("name resolution", "dns", f"cannot resolve MQTT host {self._config.host!r}"),
            ("timed out", "timeout", f"{where} did not answer in time"),
            ("unreachable", "unreachable", f"{where} is unreachable"),
        )
        for needle, kind, text in hints:
            if needle in low:
                return kind, f"{text} ({detail})"
        return "network", f"cannot connect to {where}: {detail}"

    def _describe_refusal(self, exc: MqttConnectError, *, where: str) -> tuple[str, str]:
        """A negative CONNACK: the broker is up but does not want us."""
        reason = str(exc.rc) if isinstance(exc.rc, ReasonCode) else str(exc)
        lowered = reason.lower()
        if any(w in lowered for w in ("password", "not authori", "bad user")):
            who = f"as user {self._config.username!r}" if self._config.username else "anonymously"
            return "auth", (
                f"{where} refused the connection: {reason} "
                f"(check mqtt.username/password; connecting {who})"
            )
        if "identifier" in lowered:
            return "client-id", f"{where} refused client id {self._client_id!r}: {reason}"
        return "refused", f"{where} refused the connection: {reason}"

    def _report_rejection(self, topic: str, reason: ReasonCode) -> None:
        # Once per topic and connection: a denied faces topic would otherwise log per frame.
        if topic in self._denied_topics:
            return
        self._denied_topics.add(topic)
        who = f"user {self._config.username!r}" if self._config.username else "anonymous"
        _log.warning(
            "MQTT broker %s rejected a publish to %s: %s (check the broker ACL for %s)",
            self._where,
            topic,
            reason,
            who,
        )
