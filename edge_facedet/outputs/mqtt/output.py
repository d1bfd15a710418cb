"""The MQTT output: faces, camera states and other retained messages over one connection.

Ties the MQTT pieces together: topics.py names the topics, outbox.py holds what waits for
the broker, connection.py keeps the connection and the node status, and `MqttOutput` is the
session that decides what goes out on each connection:

* extra retained messages (`set_retained`, e.g. Home Assistant discovery), before `online`;
* `<prefix>/cameras/<id>/state` (retained): the latest per camera, re-sent after every
  reconnect so a broker that lost its retained store is repaired;
* `<prefix>/cameras/<id>/faces`: FIFO from the bounded outbox, after the states (they are
  few and describe the present).

Home Assistant discovery is not built here: `outputs.build.build_mqtt_output` hands
homeassistant.py's messages in as the `announcer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

from edge_facedet.outputs.mqtt.connection import MqttConnection
from edge_facedet.outputs.mqtt.errors import BrokerIdentity
from edge_facedet.outputs.mqtt.outbox import LatestByKey, Message, Outbox
from edge_facedet.outputs.mqtt.topics import Topics, check_topic

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig, MqttConfig
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.connection import Link
    from edge_facedet.outputs.mqtt.homeassistant import DiscoveryMessage

__all__ = ["Announcer", "MqttOutput"]

log = logging.getLogger(__name__)


class Announcer(Protocol):
    """The retained messages that announce `cameras` (Home Assistant discovery)."""

    def __call__(self, *, cameras: Sequence[CameraConfig]) -> Sequence[DiscoveryMessage]: ...


class MqttOutput:
    """Publishes the service's messages to one broker; see the module docstring.

    Use from one event loop: `publish_faces`, `set_camera_state` and `set_retained` are
    synchronous and never block; `run()` is the connection task; `close()` ends it cleanly.
    """

    name = "mqtt"

    def __init__(
        self,
        *,
        config: MqttConfig,
        node_id: str,
        metrics: Metrics,
        environ: Mapping[str, str] | None = None,
        credentials_dir: Path | None = None,
        announcer: Announcer | None = None,
    ) -> None:
        self._config = config
        self._announcer = announcer
        self._topics = Topics.for_node(node_id=node_id, prefix=config.topic_prefix)
        self._outbox = Outbox(maxlen=config.outbox_size, on_drop=metrics.mqtt_dropped.inc)
        # Camera states by camera id, other retained messages by topic.
        self._states = LatestByKey()
        self._retained = LatestByKey()
        self._wakeup = asyncio.Event()
        self._connection = MqttConnection(
            config=config,
            topics=self._topics,
            broker=BrokerIdentity(
                host=config.host,
                port=config.effective_port,
                client_id=config.client_id or f"edge-facedet-{node_id}",
                username=config.username,
                will_topic=self._topics.status,
            ),
            metrics=metrics,
            environ=environ,
            credentials_dir=credentials_dir,
        )

    # -- topics and state -------------------------------------------------------------------

    @property
    def topic_prefix(self) -> str:
        return self._topics.prefix

    def topic(self, *parts: str) -> str:
        """`<prefix>/<part>/<part>...`; parts must not contain wildcards or slashes."""
        return self._topics.under(*parts)

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def outbox_len(self) -> int:
        """Faces messages waiting for the broker."""
        return len(self._outbox)

    # -- the Output protocol ----------------------------------------------------------------

    def announce(self, *, cameras: Sequence[CameraConfig]) -> None:
        """The announcer's retained messages for `cameras` (none without an announcer)."""
        if self._announcer is None:
            return
        for message in self._announcer(cameras=cameras):
            self.set_retained(
                topic=message.topic, payload=message.payload, qos=self._config.qos.state
            )

    def publish_faces(self, *, camera_id: str, payload: bytes) -> None:
        """Queue a faces message; never blocks. A full outbox drops (and counts) its oldest."""
        topic = self._topics.camera_faces(camera_id)
        self._outbox.append(Message(topic, payload, self._config.qos.faces))
        self._wakeup.set()

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        """Set a camera's retained state; only the latest is kept, and re-sent on reconnect."""
        topic = self._topics.camera_state(camera_id)  # rejects an id that breaks topics
        self._states.set(camera_id, Message(topic, payload, self._config.qos.state, retain=True))
        self._wakeup.set()

    def set_retained(self, *, topic: str, payload: bytes, qos: int) -> None:
        """Keep `payload` retained on `topic` (any topic, not only under the prefix).

        Sent after every connect before `online`, and at once if connected now; a later call
        for the same topic replaces the message.
        """
        self._retained.set(check_topic(topic), Message(topic, payload, qos, retain=True))
        self._wakeup.set()

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the output is (or within `timeout` seconds becomes) connected."""
        return await self._connection.wait_connected(timeout)

    async def wait_ready(self, timeout: float) -> bool:
        return await self.wait_connected(timeout)

    async def run(self) -> None:
        """Connect, publish, reconnect; until `close()` or cancellation. Raises nothing else."""
        await self._connection.run(self)

    async def close(self) -> None:
        """Publish `stopped` (retained), flush what fits in ~1 s, disconnect; idempotent.

        Makes `run()` return. Safe to call when `run()` never started or already ended.
        """
        self._wakeup.set()  # the session sees the closing the connection sets below
        await self._connection.close()

    # -- the connection's Session -----------------------------------------------------------

    def on_connected(self) -> None:
        self._states.mark_all_unsent()
        self._retained.mark_all_unsent()

    async def send_retained(self, link: Link) -> None:
        while self._retained:
            topic, message = self._retained.next_unsent()
            await link.publish(message)
            self._retained.sent(topic, message)

    async def send_pending(self, link: Link) -> None:
        """Retained and states first (few, and about the present), then the outbox, FIFO."""
        while not link.closing:
            if self._retained:
                await self.send_retained(link)
            elif self._states:
                await self._send_next_state(link)
            elif self._outbox:
                await self._send_next_face(link)
            else:
                # Cleared only here, with every queue seen empty; publish_faces sets it after
                # appending, and everything runs on one loop, so no wake-up is lost.
                self._wakeup.clear()
                await self._wakeup.wait()

    async def flush(self, link: Link, *, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flush(link), timeout_s)
        if self._outbox:
            log.info("MQTT closing with %d faces message(s) unsent", len(self._outbox))

    async def _flush(self, link: Link) -> None:
        while self._states or self._outbox:
            if self._states:
                await self._send_next_state(link)
            else:
                await self._send_next_face(link)

    async def _send_next_state(self, link: Link) -> None:
        camera_id, message = self._states.next_unsent()
        await link.publish(message)
        self._states.sent(camera_id, message)

    async def _send_next_face(self, link: Link) -> None:
        message = self._outbox.popleft()
        try:
            await link.publish(message)
        except BaseException:
            # Not acknowledged (connection lost, timeout, cancelled): keep it for the next
            # connection. With QoS 1 that may duplicate it; subscribers dedupe on event_id.
            self._outbox.requeue(message)
            raise
