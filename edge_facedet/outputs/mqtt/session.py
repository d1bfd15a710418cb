"""One live broker connection: what the session sends over it, between the node statuses.

`serve` runs a `Session` (the MQTT output) on a connected client: the session's reconcile
and retained messages first, then `online`, then its messages as they come; at `close()` a
bounded flush and `stopped`, awaiting its PUBACK. A cancellation without `close()` says
`offline` itself, since a clean DISCONNECT suppresses the Last Will. The whole session is
guarded by one task that notices a lost connection (aiomqtt's publish only notices at its
timeout). `Link` is the session's view of the connection: publish, a denied publish
reported once per topic, and the brief read of a retained message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import aiomqtt

from edge_facedet.outputs.mqtt.hooks import watch_publish_failures
from edge_facedet.outputs.mqtt.outbox import Message

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from paho.mqtt.reasoncodes import ReasonCode

    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.errors import BrokerIdentity

__all__ = ["Link", "NodeStatus", "Session", "serve"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# close(): how long the session may keep flushing, and how long to wait for the PUBACK of
# `stopped`; together they bound a shutdown with a slow or dead broker.
CLOSE_FLUSH_S = 0.5
CLOSE_STATUS_TIMEOUT_S = 1.0
# A cancellation without close() publishes `offline` itself, within this time.
CANCEL_STATUS_TIMEOUT_S = 1.0


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
        receive_maximum: int | None = None,
    ) -> None:
        self._client = client
        self.receive_maximum = receive_maximum
        """The broker's limit on unacknowledged QoS>0 publishes (None: no limit given)."""
        self._broker = broker
        self._metrics = metrics
        self._closing = closing
        # Once per topic and connection: a denied faces topic would otherwise log per frame.
        self._denied_topics: set[str] = set()
        # read_retained()'s waits, by topic; fed by the connection's message pump.
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        watch_publish_failures(client, self._report_rejection)

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
        await self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        # Handed to the broker (QoS 0: written; QoS>=1: acknowledged), even if the ACL denied
        # it (reported by _report_rejection): retrying a denied message would never succeed.
        self._metrics.mqtt_published.inc()

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


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The retained `<prefix>/status` messages: `online`, `offline`, `stopped`."""

    topic: str
    qos: int

    def message(self, status: str) -> Message:
        return Message(self.topic, status.encode(), self.qos, retain=True)

    def stopped(self) -> Message:
        # QoS>=1: close() awaits its PUBACK.
        return Message(self.topic, b"stopped", max(self.qos, 1), retain=True)


async def serve(
    session: Session,
    *,
    client: aiomqtt.Client,
    broker: BrokerIdentity,
    metrics: Metrics,
    closing: asyncio.Event,
    status: NodeStatus,
    receive_maximum: int | None = None,
) -> None:
    """Run `session` on the connected `client` until `closing`; raises MqttError as soon as
    the connection is lost. `receive_maximum`: the broker's, from its CONNACK."""
    link = Link(
        client=client,
        broker=broker,
        metrics=metrics,
        closing=closing,
        receive_maximum=receive_maximum,
    )
    lost = asyncio.create_task(_connection_lost(client, link))
    try:
        # One guard for the whole session rather than one per message: a guard is a task
        # and an asyncio.wait, and faces messages go out at the detector's rate.
        await _guarded(_session(link, session, status=status, where=broker.where), lost)
    except asyncio.CancelledError:
        if not link.closing and not lost.done():
            # Cancelled without close(): a clean DISCONNECT suppresses the Will, so say
            # `offline` ourselves, or the retained status would claim `online` forever.
            offline = status.message("offline")
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


async def _session(link: Link, session: Session, *, status: NodeStatus, where: str) -> None:
    await session.reconcile(link)
    await session.send_retained(link)
    await link.publish(status.message("online"))
    await session.send_pending(link)
    # close(): flush for a bounded time, then `stopped` with QoS>=1, awaiting its PUBACK.
    await session.flush(link, timeout_s=CLOSE_FLUSH_S)
    try:
        await asyncio.wait_for(link.publish(status.stopped()), CLOSE_STATUS_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.warning("MQTT broker %s did not acknowledge the `stopped` status", where)


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
        if not task.cancelled():
            task.exception()  # ended otherwise as the cancellation reached it; see below
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        # It ended another way as the cancellation reached it (a publish failing on the dead
        # socket, which wait_for in flush may pass on instead of the cancellation): the lost
        # connection below is the news; without this the loop logs "Task exception was
        # never retrieved".
        task.exception()
    cause = lost.exception() if not lost.cancelled() else None
    raise aiomqtt.MqttError(f"connection lost: {cause}") from cause


async def _connection_lost(client: aiomqtt.Client, link: Link) -> None:
    """Finish (with MqttError) when the connection drops; hand any message to `link`.

    Only `Link.read_retained` subscribes, briefly, so the message iterator yields little;
    its end is aiomqtt's public signal for a disconnect.
    """
    async for message in client.messages:
        link.received(message)
