"""The MQTT output: faces, events, camera states, snapshots and announcements, one connection.

Ties the MQTT pieces together: topics.py names the topics, outbox.py holds what waits for
the broker, connection.py keeps the connection and the node status, and `MqttOutput` is the
session that decides what goes out on each connection:

* extra retained messages (`set_retained`: Home Assistant discovery), before `online`;
* `<prefix>/cameras/<id>/state` (retained): the latest per camera, re-sent after every
  reconnect so a broker that lost its retained store is repaired;
* `<prefix>/cameras/<id>/snapshot` (retained, the JPEG's raw bytes, QoS of states): the
  latest per camera, re-sent like the states;
* `<prefix>/cameras/<id>/faces` and `<prefix>/cameras/<id>/events` (not retained): FIFO from
  one bounded outbox, after the states and snapshots (few, and about the present). One
  outbox, so a subscriber gets a camera's events and faces messages in the order they
  happened, through a broker outage too; a full outbox drops the oldest of either kind.

After a connect that sent announcements, the states and snapshots go out once more
`REANNOUNCE_DELAY_S` later (see there why).

Cameras that go away leave nothing retained: `forget_camera` (a reload removed the camera)
replaces its state, snapshot and discovery topics with empty retained messages, and the
retained manifest `<prefix>/cameras` lists the cameras announced, so on its first connect an
output reads the manifest an earlier run left (`reconcile`) and clears the cameras no longer
configured before it says `online`. A reload that changes the MQTT settings makes a new
output that `take_over`s the old one's queue and latest messages.

Home Assistant discovery is not built here: `outputs.build.build_mqtt_output` hands
homeassistant.py's messages in as the `announcer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Protocol

from edge_facedet.outputs.mqtt.connection import MqttConnection
from edge_facedet.outputs.mqtt.errors import BrokerIdentity
from edge_facedet.outputs.mqtt.homeassistant import discovery_topics
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

# Home Assistant subscribes to a newly announced entity's topics only once it has processed
# the discovery config, and until the next message on the state topic it shows the entity as
# unavailable, even though the retained state was already on the broker. So after the
# announcements of a connect, the retained states and snapshots are sent once more, this long
# later: enough for HA to have subscribed, too short for anyone to notice the gap. Not a
# setting: it only repeats messages that are already retained.
REANNOUNCE_DELAY_S = 1.0
# How long the first connect waits for the retained manifest an earlier run left. A broker
# sends retained messages right after its SUBACK, so this is only waited out when there is
# none (the node's first run ever, or a broker that lost its store).
MANIFEST_WAIT_S = 1.0


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
        self._node_id = node_id
        self._announcer = announcer
        self._topics = Topics.for_node(node_id=node_id, prefix=config.topic_prefix)
        # The cameras announced, in order: the manifest's content.
        self._announced: dict[str, None] = {}
        self._reconciled = False
        self._outbox = Outbox(maxlen=config.outbox_size, on_drop=metrics.mqtt_dropped.inc)
        # Camera states and snapshots by camera id, other retained messages by topic.
        self._states = LatestByKey()
        self._snapshots = LatestByKey()
        self._retained = LatestByKey()
        self._wakeup = asyncio.Event()
        # Loop time at which states and snapshots are sent again (REANNOUNCE_DELAY_S).
        self._resend_at: float | None = None
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
        """Faces and event messages waiting for the broker."""
        return len(self._outbox)

    # -- the Output protocol ----------------------------------------------------------------

    def announce(self, *, cameras: Sequence[CameraConfig]) -> None:
        """The announcer's retained messages for `cameras` (none without an announcer).

        A camera with snapshots off gets an empty retained snapshot: a picture of a person
        that an earlier configuration left retained on the broker is deleted, not kept.
        Called again by a reload for the cameras it adds or restarts; the manifest follows.
        """
        for camera in cameras:
            self._announced[camera.id] = None
            # A camera removed earlier in this run and now back: its clearing is void.
            self._retained.discard(self._topics.camera_state(camera.id))
            self._retained.discard(self._topics.camera_snapshot(camera.id))
            if not camera.snapshots.enabled:
                self.set_retained(
                    topic=self._topics.camera_snapshot(camera.id),
                    payload=b"",
                    qos=self._config.qos.state,
                )
        self._set_manifest()
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
        self._announced.pop(camera_id, None)
        self._clear_retained(camera_id)
        self._set_manifest()

    @property
    def announced(self) -> tuple[str, ...]:
        """The camera ids of the manifest."""
        return tuple(self._announced)

    def _clear_retained(self, camera_id: str) -> None:
        """Empty retained messages on every retained topic the camera may have."""
        topics = [self._topics.camera_state(camera_id), self._topics.camera_snapshot(camera_id)]
        if self._announcer is not None:
            topics += discovery_topics(node_id=self._node_id, camera_id=camera_id)
        for topic in topics:
            self.set_retained(topic=topic, payload=b"", qos=self._config.qos.state)

    def _set_manifest(self) -> None:
        payload = json.dumps(list(self._announced), separators=(",", ":")).encode()
        self.set_retained(topic=self._topics.manifest, payload=payload, qos=self._config.qos.state)

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
        self._announced = dict(old._announced)
        self._wakeup.set()

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
        self._wakeup.set()

    def publish_event(self, *, camera_id: str, payload: bytes) -> None:
        """Queue a track event behind the faces messages before it; never blocks."""
        topic = self._topics.camera_events(camera_id)
        self._outbox.append(Message(topic, payload, self._config.qos.events))
        self._wakeup.set()

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        """Set a camera's retained state; only the latest is kept, and re-sent on reconnect."""
        topic = self._topics.camera_state(camera_id)  # rejects an id that breaks topics
        self._states.set(camera_id, Message(topic, payload, self._config.qos.state, retain=True))
        self._wakeup.set()

    def set_snapshot(self, *, camera_id: str, jpeg: bytes) -> None:
        """Set a camera's retained snapshot; only the latest is kept, and re-sent on reconnect."""
        topic = self._topics.camera_snapshot(camera_id)
        self._snapshots.set(camera_id, Message(topic, jpeg, self._config.qos.state, retain=True))
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

    async def reconcile(self, link: Link) -> None:
        """Once per output, before the retained messages: clear what the manifest an earlier
        run left names and this configuration does not (a camera removed while stopped)."""
        if self._reconciled:
            return
        payload = await link.read_retained(self._topics.manifest, timeout_s=MANIFEST_WAIT_S)
        self._reconciled = True
        stale = [
            camera_id for camera_id in _manifest_ids(payload) if camera_id not in self._announced
        ]
        for camera_id in stale:
            self._clear_retained(camera_id)
        if stale:
            log.info("MQTT: cleared the retained topics of removed camera(s) %s", ", ".join(stale))

    def on_connected(self) -> None:
        self._states.mark_all_unsent()
        self._snapshots.mark_all_unsent()
        self._retained.mark_all_unsent()
        self._resend_at = None  # armed again by this connection's announcements

    async def send_retained(self, link: Link) -> None:
        announced = bool(self._retained)
        while self._retained:
            topic, message = self._retained.next_unsent()
            await link.publish(message)
            self._retained.sent(topic, message)
        if announced:
            self._resend_at = asyncio.get_running_loop().time() + REANNOUNCE_DELAY_S

    async def send_pending(self, link: Link) -> None:
        """Retained, states and snapshots first (few, and about the present), then the outbox."""
        while not link.closing:
            self._resend_if_due()
            if self._retained:
                await self.send_retained(link)
            elif self._states:
                await self._send_latest(self._states, link)
            elif self._snapshots:
                await self._send_latest(self._snapshots, link)
            elif self._outbox:
                await self._send_next_queued(link)
            else:
                # Cleared only here, with every queue seen empty; the producers set it after
                # adding, and everything runs on one loop, so no wake-up is lost.
                self._wakeup.clear()
                await self._wait_for_work()

    async def flush(self, link: Link, *, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flush(link), timeout_s)
        if self._outbox:
            log.info("MQTT closing with %d faces/event message(s) unsent", len(self._outbox))

    async def _flush(self, link: Link) -> None:
        # The outbox before the snapshots here: at a stop it holds the tracks' `end` events,
        # and a large picture must not use up the little time there is.
        while self._states or self._outbox or self._snapshots:
            if self._states:
                await self._send_latest(self._states, link)
            elif self._outbox:
                await self._send_next_queued(link)
            else:
                await self._send_latest(self._snapshots, link)

    def _resend_if_due(self) -> None:
        if self._resend_at is not None and asyncio.get_running_loop().time() >= self._resend_at:
            self._resend_at = None
            self._states.mark_all_unsent()
            self._snapshots.mark_all_unsent()

    async def _wait_for_work(self) -> None:
        """Until something is added, or the re-send after announcements is due."""
        if self._resend_at is None:
            await self._wakeup.wait()
            return
        delay = self._resend_at - asyncio.get_running_loop().time()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max(delay, 0.0))

    @staticmethod
    async def _send_latest(latest: LatestByKey, link: Link) -> None:
        key, message = latest.next_unsent()
        await link.publish(message)
        latest.sent(key, message)

    async def _send_next_queued(self, link: Link) -> None:
        message = self._outbox.popleft()
        try:
            await link.publish(message)
        except BaseException:
            # Not acknowledged (connection lost, timeout, cancelled): keep it for the next
            # connection. With QoS 1 that may duplicate it; subscribers dedupe on event_id.
            self._outbox.requeue(message)
            raise


def _manifest_ids(payload: bytes | None) -> list[str]:
    """The camera ids of a manifest (none for a missing or malformed one)."""
    if not payload:
        return []
    try:
        ids = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(ids, list):
        return []
    valid = []
    for camera_id in ids:
        if not isinstance(camera_id, str):
            continue
        try:
            Topics("x").camera_state(camera_id)  # only ids that make topic levels
        except ValueError:
            continue
        valid.append(camera_id)
    return valid
