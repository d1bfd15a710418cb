"""The MQTT output: faces, events, camera states, snapshots and announcements, one connection.

Ties the MQTT pieces together: topics.py names the topics, outbox.py holds what waits for
the broker, connection.py keeps the connection, session.py frames each live connection with
the node status, and `MqttOutput` is the session that decides what goes out on it:

* extra retained messages (`set_retained`: Home Assistant discovery), before `online`;
* `<prefix>/cameras/<id>/state` (retained): the latest per camera, re-sent after every
  reconnect so a broker that lost its retained store is repaired;
* `<prefix>/cameras/<id>/snapshot` (retained, the JPEG's raw bytes, QoS of states): the
  latest per camera, re-sent like the states;
* `<prefix>/cameras/<id>/faces` and `<prefix>/cameras/<id>/events` (not retained): FIFO from
  one bounded outbox, after the states and snapshots (few, and about the present). One
  outbox, so a subscriber gets a camera's events and faces messages in the order they
  happened, through a broker outage too; a full outbox drops the oldest of either kind.

delivery.py decides in what order they go out on a connection (and re-sends the states and
snapshots `REANNOUNCE_DELAY_S` after announcements); manifest.py keeps the retained manifest
`<prefix>/cameras` of the cameras announced and clears the retained topics of cameras that
went away (`forget_camera`, or an earlier run's manifest at the first connect). A reload that
changes the MQTT settings makes a new output that `take_over`s the old one's queue and latest
messages.

Home Assistant discovery is not built here: `outputs.build.build_mqtt_output` hands
homeassistant.py's messages in as the `announcer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from edge_facedet.outputs.mqtt.connection import MqttConnection
from edge_facedet.outputs.mqtt.delivery import REANNOUNCE_DELAY_S, Delivery
from edge_facedet.outputs.mqtt.errors import BrokerIdentity
from edge_facedet.outputs.mqtt.manifest import CameraManifest
from edge_facedet.outputs.mqtt.outbox import LatestByKey, Message, Outbox
from edge_facedet.outputs.mqtt.topics import Topics, check_topic

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig, MqttConfig
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.homeassistant import DiscoveryMessage
    from edge_facedet.outputs.mqtt.session import Link

# REANNOUNCE_DELAY_S: re-exported, tests time the re-send after announcements with it.
__all__ = ["REANNOUNCE_DELAY_S", "Announcer", "MqttOutput"]


class Announcer(Protocol):
    """The retained messages that announce `cameras` (Home Assistant discovery)."""

    def __call__(self, *, cameras: Sequence[CameraConfig]) -> Sequence[DiscoveryMessage]: ...


class MqttOutput:
    """Publishes the service's messages to one broker; see the module docstring.

    Use from one event loop: `publish_faces`, `publish_event`, `set_camera_state`,
    `set_snapshot` and `set_retained` are synchronous and never block; `run()` is the
    connection task; `close()` ends it cleanly.
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
        # Camera states and snapshots by camera id, other retained messages by topic.
        self._states = LatestByKey()
        self._snapshots = LatestByKey()
        self._retained = LatestByKey()
        self._delivery = Delivery(
            outbox=self._outbox,
            states=self._states,
            snapshots=self._snapshots,
            retained=self._retained,
        )
        self._manifest = CameraManifest(
            topics=self._topics,
            node_id=node_id,
            qos=config.qos.state,
            discovery=announcer is not None,
            retained=self._retained,
            set_retained=self.set_retained,
        )
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
        """Faces and event messages waiting for the broker: queued, or sent and not
        acknowledged yet (delivery.py's window)."""
        return len(self._outbox) + self._delivery.in_flight

    # -- the Output protocol ----------------------------------------------------------------

    def announce(self, *, cameras: Sequence[CameraConfig]) -> None:
        """The announcer's retained messages for `cameras` (none without an announcer).

        A camera with snapshots off gets an empty retained snapshot: a picture of a person
        that an earlier configuration left retained on the broker is deleted, not kept.
        Called again by a reload for the cameras it adds or restarts; the manifest follows.
        """
        self._manifest.announce(cameras)
        if self._announcer is None:
            return
        for message in self._announcer(cameras=cameras):
            self.set_retained(
                topic=message.topic, payload=message.payload, qos=self._config.qos.state
            )

    def forget_camera(self, camera_id: str) -> None:
        """A reload removed the camera: clear its retained topics and drop it from the
        manifest; a state or snapshot still waiting for the broker is not sent."""
        self._states.discard(camera_id)
        self._snapshots.discard(camera_id)
        self._manifest.forget(camera_id)

    @property
    def announced(self) -> tuple[str, ...]:
        """The camera ids of the manifest."""
        return self._manifest.ids

    def take_over(self, old: MqttOutput) -> None:
        """Continue `old`'s work (a reload changed the MQTT settings; `old` is closed): its
        queued faces and events, latest states, snapshots and retained messages, moved to
        this output's prefix. Announcements are the caller's to repeat (their bodies name
        the prefix)."""
        for message in old._outbox.messages():
            self._outbox.append(self._moved(message, old=old))
        for target, source in (
            (self._states, old._states),
            (self._snapshots, old._snapshots),
            (self._retained, old._retained),
        ):
            for key, message in source.items():
                moved = self._moved(message, old=old)
                target.set(moved.topic if source is old._retained else key, moved)
        self._manifest.take_over(old._manifest)
        self._delivery.wake()

    def _moved(self, message: Message, *, old: MqttOutput) -> Message:
        topic = self._topics.reprefixed(message.topic, old=old._topics)
        qos = message.qos
        if topic.endswith("/faces"):
            qos = self._config.qos.faces
        elif topic.endswith("/events"):
            qos = self._config.qos.events
        return Message(topic, message.payload, qos, retain=message.retain)

    def publish_faces(self, *, camera_id: str, payload: bytes) -> None:
        """Queue a faces message; never blocks. A full outbox drops (and counts) its oldest."""
        topic = self._topics.camera_faces(camera_id)
        self._outbox.append(Message(topic, payload, self._config.qos.faces))
        self._delivery.wake()

    def publish_event(self, *, camera_id: str, payload: bytes) -> None:
        """Queue a track event behind the faces messages before it; never blocks."""
        topic = self._topics.camera_events(camera_id)
        self._outbox.append(Message(topic, payload, self._config.qos.events))
        self._delivery.wake()

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        """Set a camera's retained state; only the latest is kept, and re-sent on reconnect."""
        topic = self._topics.camera_state(camera_id)  # rejects an id that breaks topics
        self._states.set(camera_id, Message(topic, payload, self._config.qos.state, retain=True))
        self._delivery.wake()

    def set_snapshot(self, *, camera_id: str, jpeg: bytes) -> None:
        """Set a camera's retained snapshot; only the latest is kept, and re-sent on reconnect."""
        topic = self._topics.camera_snapshot(camera_id)
        self._snapshots.set(camera_id, Message(topic, jpeg, self._config.qos.state, retain=True))
        self._delivery.wake()

    def set_retained(self, *, topic: str, payload: bytes, qos: int) -> None:
        """Keep `payload` retained on `topic` (any topic, not only under the prefix).

        Sent after every connect before `online`, and at once if connected now; a later call
        for the same topic replaces the message.
        """
        self._retained.set(check_topic(topic), Message(topic, payload, qos, retain=True))
        self._delivery.wake()

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
        self._delivery.wake()  # the session sees the closing the connection sets below
        await self._connection.close()

    # -- the connection's Session: the manifest first, then delivery.py ----------------------

    async def reconcile(self, link: Link) -> None:
        await self._manifest.reconcile(link)

    def on_connected(self) -> None:
        self._delivery.on_connected()

    async def send_retained(self, link: Link) -> None:
        await self._delivery.send_retained(link)

    async def send_pending(self, link: Link) -> None:
        await self._delivery.send_pending(link)

    async def flush(self, link: Link, *, timeout_s: float) -> None:
        await self._delivery.flush(link, timeout_s=timeout_s)
