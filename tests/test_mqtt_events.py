"""Track events and snapshots through MqttOutput, against real Mosquitto brokers.

Events share the faces outbox (one order through an outage), snapshots are retained like
camera states (a large JPEG goes out whole: hooks.py's size cap is for inbound packets), and
after the Home Assistant discovery of a connect the states and snapshots go out once more.
Every test uses its own topic prefix and deletes the retained messages it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from typing import TYPE_CHECKING, Any

import aiomqtt

from edge_facedet.config import CameraConfig, MqttConfig, QosConfig
from edge_facedet.outputs.build import OutputContext, build_mqtt_output
from edge_facedet.outputs.memory import MemoryOutput
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt.hooks import MAX_INBOUND_PACKET
from edge_facedet.outputs.mqtt.output import REANNOUNCE_DELAY_S, MqttOutput
from tests.support.broker import BrokerAddress, MosquittoBroker, Received, TcpGate, mqtt_subscriber

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

# Bigger than the inbound packet cap, as a full-frame snapshot of a 4K camera can be.
SNAPSHOT_BYTES = MAX_INBOUND_PACKET + 300_000


def prefix() -> str:
    return f"test-edge-facedet/{uuid.uuid4().hex[:12]}"


def make(host: str, port: int, topic_prefix: str, **options: Any) -> MqttOutput:
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "topic_prefix": topic_prefix,
        "client_id": f"test-{uuid.uuid4().hex[:12]}",
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        # The defaults for faces and events, which differ, so a subscriber at QoS 2 sees which
        # setting was used. (Not events at QoS 2: a QoS 2 message reaches a paho subscriber
        # only at its PUBREL, after QoS 0/1 messages sent later; MQTT orders each QoS apart.)
        "qos": QosConfig(faces=0, state=1, status=1, events=1),
    }
    settings.update(options)
    return MqttOutput(config=MqttConfig(**settings), node_id="n1", metrics=Metrics())


@contextlib.asynccontextmanager
async def running(publisher: MqttOutput) -> AsyncIterator[None]:
    """run() in a task; at exit close() then cancel, as the service's shutdown does."""
    task = asyncio.create_task(publisher.run())
    try:
        yield
    finally:
        await publisher.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def clear_retained(host: str, port: int, *topics: str) -> None:
    async with aiomqtt.Client(host, port) as client:
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)


def body(kind: str, seq: int) -> bytes:
    return json.dumps({"kind": kind, "seq": seq}).encode()


def publish_mixed(publisher: MqttOutput, seqs: range) -> list[tuple[str, int]]:
    """Faces messages with an event after every third one; the order they were handed over."""
    order = []
    for seq in seqs:
        publisher.publish_faces(camera_id="c", payload=body("faces", seq))
        order.append(("faces", seq))
        if seq % 3 == 0:
            publisher.publish_event(camera_id="c", payload=body("event", seq))
            order.append(("event", seq))
    return order


def received_mixed(messages: list[Received], topics: dict[str, str]) -> list[tuple[str, int]]:
    return [(topics[m.topic], json.loads(m.payload)["seq"]) for m in messages if m.topic in topics]


async def test_events_and_faces_keep_one_order_through_a_broker_outage(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = private_broker()
    gate = TcpGate(target_host=broker.host, target_port=broker.port)
    await gate.open()
    p = prefix()
    publisher = make(gate.host, gate.port, p, outbox_size=100)
    topics = {f"{p}/cameras/c/faces": "faces", f"{p}/cameras/c/events": "event"}
    events_topic = f"{p}/cameras/c/events"
    async with running(publisher):
        async with mqtt_subscriber(f"{p}/#", host=broker.host, port=broker.port) as before:
            assert await publisher.wait_connected(5)
            sent = publish_mixed(publisher, range(6))
            await before.wait_for(lambda m: received_mixed(m, topics) == sent)
            await asyncio.to_thread(broker.kill)
            await gate.close()  # the publisher must not reach the new broker before `after`
            await before.wait_for(lambda _: before.disconnected)
        for _ in range(100):
            if not publisher.connected:
                break
            await asyncio.sleep(0.05)
        assert not publisher.connected
        during = publish_mixed(publisher, range(6, 30))  # queued while the broker is down
        assert publisher.outbox_len == len(during)
        await asyncio.to_thread(broker.start)
        async with mqtt_subscriber(f"{p}/#", host=broker.host, port=broker.port) as after:
            await gate.open()
            await after.wait_for(lambda m: len(received_mixed(m, topics)) >= len(during))
            assert received_mixed(after.messages, topics) == during
            events = after.on(events_topic)
            assert {(m.qos, m.retain) for m in events} == {(1, False)}  # qos.events, live
    await gate.close()


async def test_a_large_snapshot_arrives_whole_and_retained(mqtt_broker: BrokerAddress) -> None:
    p = prefix()
    host, port = mqtt_broker.host, mqtt_broker.port
    publisher = make(host, port, p, qos=QosConfig(state=2))
    snapshot_topic = f"{p}/cameras/c/snapshot"
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(SNAPSHOT_BYTES - 6) + b"\xff\xd9"
    assert len(jpeg) > MAX_INBOUND_PACKET
    try:
        async with (
            mqtt_subscriber(snapshot_topic, host=host, port=port) as live,
            running(publisher),
        ):
            publisher.set_snapshot(camera_id="c", jpeg=jpeg)
            await live.wait_for(lambda m: len(m) == 1, timeout=10)
            assert live.messages[0].payload == jpeg
            assert live.messages[0].qos == 2  # the states' QoS
            # Still connected: the packet cap did not end the connection on the way out.
            assert publisher.connected
        async with mqtt_subscriber(snapshot_topic, host=host, port=port) as late:
            await late.wait_for(lambda m: len(m) == 1, timeout=10)
            assert (late.messages[0].payload, late.messages[0].retain) == (jpeg, True)
    finally:
        await clear_retained(host, port, snapshot_topic, f"{p}/status")


async def test_states_and_snapshots_are_sent_again_after_discovery(
    mqtt_broker: BrokerAddress,
) -> None:
    # A real Home Assistant subscribes to a new entity's topics only after processing its
    # discovery config, and shows it unavailable until the next message there.
    node = f"ha-{uuid.uuid4().hex[:8]}"
    host, port = mqtt_broker.host, mqtt_broker.port
    config = MqttConfig(host=host, port=port, home_assistant_discovery=True)
    publisher = build_mqtt_output(
        config=config, node_id=node, context=OutputContext(metrics=Metrics())
    )
    p = publisher.topic_prefix
    camera = CameraConfig.model_validate(
        {"id": "door", "url": "/dev/video0", "snapshots": {"mode": "crop"}}
    )
    publisher.announce(cameras=[camera])
    publisher.set_camera_state(camera_id="door", payload=b'{"open_tracks":1}')
    publisher.set_snapshot(camera_id="door", jpeg=b"\xff\xd8jpeg\xff\xd9")
    state_topic, snapshot_topic = f"{p}/cameras/door/state", f"{p}/cameras/door/snapshot"
    discovery: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with (
            mqtt_subscriber((f"{p}/#", "homeassistant/#"), host=host, port=port) as live,
            running(publisher),
        ):
            await live.wait_for(lambda m: len(live.on(snapshot_topic)) == 1)
            first_at = loop.time()
            await live.wait_for(lambda m: len(live.on(snapshot_topic)) == 2, timeout=5)
            gap_s = loop.time() - first_at
            # The shared broker holds other nodes' retained configs: this node's only.
            topics = [m.topic for m in live.messages if m.topic.startswith(p) or node in m.topic]
            discovery = [t for t in topics if t.startswith("homeassistant/")]
        assert len(discovery) == 4  # faces, face_present, events, snapshot image
        last_config = max(topics.index(t) for t in discovery)
        after = [t for t in topics[last_config + 1 :] if t != f"{p}/status"]
        # Once right away, once more a moment later; nothing else re-sent.
        assert after == [state_topic, snapshot_topic, state_topic, snapshot_topic]
        assert gap_s >= REANNOUNCE_DELAY_S * 0.8, gap_s
    finally:
        await clear_retained(host, port, *discovery, state_topic, snapshot_topic, f"{p}/status")


async def test_memory_output_keeps_events_and_snapshots_per_camera() -> None:
    memory = MemoryOutput()
    memory.publish_event(camera_id="a", payload=b'{"type":"new"}')
    memory.set_snapshot(camera_id="a", jpeg=b"\xff\xd8a")
    memory.publish_event(camera_id="b", payload=b'{"type":"end"}')
    memory.publish_faces(camera_id="a", payload=b"{}")
    assert memory.events() == [b'{"type":"new"}', b'{"type":"end"}']
    assert memory.events("b") == [b'{"type":"end"}']
    assert memory.snapshots("a") == [b"\xff\xd8a"]
    assert memory.snapshots("b") == []
    assert [r.kind for r in memory.records] == ["event", "snapshot", "event", "faces"]
