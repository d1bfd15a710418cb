"""MqttOutput against real Mosquitto brokers; every test uses its own topic prefix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest

from edge_facedet.config import MqttConfig, QosConfig, SecretSource, TlsConfig
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt import connection as mqtt_connection
from edge_facedet.outputs.mqtt.delivery import IN_FLIGHT_MAX, OTHER_PUBLISHES
from edge_facedet.outputs.mqtt.output import MqttOutput
from tests.support.broker import (
    BrokerAddress,
    MosquittoBroker,
    Received,
    TcpGate,
    delete_test_retained,
    make_tls_files,
    mqtt_subscriber,
    python_env,
)
from tests.support.load import load_slack
from tests.support.service import poll

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PUBLISHER_LOG = "edge_facedet.outputs.mqtt"


def prefix() -> str:
    return f"test-edge-facedet/{uuid.uuid4().hex[:12]}"


def make(
    host: str,
    port: int,
    topic_prefix: str,
    *,
    environ: dict[str, str] | None = None,
    **options: Any,
) -> tuple[MqttOutput, Metrics]:
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "topic_prefix": topic_prefix,
        "client_id": f"test-{uuid.uuid4().hex[:12]}",
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        "qos": QosConfig(faces=1, state=1, status=1),
    }
    settings.update(options)
    metrics = Metrics()
    publisher = MqttOutput(
        config=MqttConfig(**settings), node_id="n1", metrics=metrics, environ=environ
    )
    return publisher, metrics


@contextlib.asynccontextmanager
async def running(publisher: MqttOutput) -> AsyncIterator[asyncio.Task[None]]:
    """run() in a task; at exit close() then cancel, as the service's shutdown does."""
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        await publisher.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def seqs(messages: list[Received], topic: str) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in messages if m.topic == topic]


def face(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def value(metrics: Metrics, name: str) -> float:
    """An unlabelled sample of the publisher's registry, as a scrape would read it."""
    sample = metrics.registry.get_sample_value(f"edge_facedet_{name}")
    assert sample is not None, f"{name} is not exposed"
    return sample


async def gated(
    private_broker: Callable[..., MosquittoBroker], *, reply_delay_s: float = 0.0, **options: Any
) -> tuple[MosquittoBroker, TcpGate, MqttOutput, Metrics, str]:
    """A private broker behind an open TcpGate, an output that reaches it through the gate
    (`options` as for `make`), and the output's topic of camera `c`'s faces."""
    broker = private_broker(**options.pop("broker", {}))
    gate = TcpGate(target_host=broker.host, target_port=broker.port, reply_delay_s=reply_delay_s)
    await gate.open()
    publisher, metrics = make(gate.host, gate.port, prefix(), **options)
    return broker, gate, publisher, metrics, publisher.topic("cameras", "c", "faces")


async def clear_retained(host: str, port: int, *topics: str) -> None:
    async with aiomqtt.Client(host, port) as client:
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)


async def test_online_faces_in_order_state_retained(mqtt_broker: BrokerAddress) -> None:
    p = prefix()
    host, port = mqtt_broker.host, mqtt_broker.port
    publisher, metrics = make(host, port, p, qos=QosConfig(faces=1, state=2, status=1))
    assert publisher.topic_prefix == p
    faces_topic = publisher.topic("cameras", "cam1", "faces")
    state_topic = publisher.topic("cameras", "cam1", "state")
    try:
        async with mqtt_subscriber(f"{p}/#", host=host, port=port) as sub, running(publisher):
            assert await publisher.wait_connected(5)
            assert value(metrics, "mqtt_connected") == 1
            publisher.set_camera_state(camera_id="cam1", payload=b'{"state":"streaming"}')
            for i in range(100):
                publisher.publish_faces(camera_id="cam1", payload=face(i))
            await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == 100)
            assert seqs(sub.messages, faces_topic) == list(range(100))
            assert {m.qos for m in sub.on(faces_topic)} == {1}
            assert sub.on(f"{p}/status")[0].payload == b"online"
            assert sub.on(state_topic)[-1].qos == 2
            # The counter moves on the broker's acknowledgement, which may trail delivery.
            deadline = time.monotonic() + 5
            while value(metrics, "mqtt_published_total") < 102 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert value(metrics, "mqtt_published_total") == 102
            assert value(metrics, "mqtt_dropped_total") == 0
            # A late subscriber gets the retained status and state.
            async with mqtt_subscriber(f"{p}/#", host=host, port=port) as late:
                await late.wait_for(lambda m: len(m) >= 2)
                retained = {m.topic: (m.payload, m.retain) for m in late.messages}
                assert retained == {
                    f"{p}/status": (b"online", True),
                    state_topic: (b'{"state":"streaming"}', True),
                }
    finally:
        await clear_retained(host, port, f"{p}/status", state_topic)


async def test_events_at_qos_1_do_not_hold_qos_0_faces_for_a_delayed_ack(
    mqtt_broker: BrokerAddress,
) -> None:
    """The defaults (faces QoS 0, events QoS 1), interleaved as a busy camera sends them.

    With Nagle on, each event waited for the broker's delayed ACK of the faces message
    before it (40 ms on Linux), and everything behind it waited for the event's PUBACK:
    these 100 pairs took 4.4 s. Without it they take tens of milliseconds.
    """
    p = prefix()
    host, port = mqtt_broker.host, mqtt_broker.port
    publisher, _ = make(host, port, p, qos=QosConfig(faces=0, state=1, status=1, events=1))
    faces_topic = publisher.topic("cameras", "cam1", "faces")
    events_topic = publisher.topic("cameras", "cam1", "events")
    pairs = 100
    try:
        async with mqtt_subscriber(f"{p}/#", host=host, port=port) as sub, running(publisher):
            assert await publisher.wait_connected(5)
            await sub.wait_for(lambda m: any(x.topic == f"{p}/status" for x in m))
            started = time.monotonic()
            for i in range(pairs):
                publisher.publish_faces(camera_id="cam1", payload=face(i))
                publisher.publish_event(camera_id="cam1", payload=face(i))
                await asyncio.sleep(0)  # let the outbox send, as frames arrive one by one
            await sub.wait_for(lambda m: len(seqs(m, events_topic)) == pairs, timeout=10)
            took = time.monotonic() - started
            assert seqs(sub.messages, faces_topic) == list(range(pairs))
            assert seqs(sub.messages, events_topic) == list(range(pairs))
            # 2.2x under the delayed-ACK floor (100 x 40 ms = 4.0 s).
            assert took < 1.8, f"{pairs} faces/event pairs took {took:.2f} s"
    finally:
        await clear_retained(host, port, f"{p}/status")


async def test_broker_down_at_start_outbox_bounded_then_drained(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = private_broker(start=False)
    gate = TcpGate(target_host=broker.host, target_port=broker.port)
    p = prefix()
    publisher, metrics = make(gate.host, gate.port, p, outbox_size=5)
    faces_topic = publisher.topic("cameras", "c", "faces")
    async with running(publisher) as task:
        assert not await publisher.wait_connected(0.5)
        assert not task.done()  # run() survives the refused connections
        for i in range(8):
            publisher.publish_faces(camera_id="c", payload=face(i))  # never blocks
        assert publisher.outbox_len == 5
        assert value(metrics, "mqtt_dropped_total") == 3
        assert value(metrics, "mqtt_connected") == 0
        await asyncio.to_thread(broker.start)
        async with mqtt_subscriber(f"{p}/#", host=broker.host, port=broker.port) as sub:
            await gate.open()
            assert await publisher.wait_connected(5)
            await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == 5)
            assert seqs(sub.messages, faces_topic) == [3, 4, 5, 6, 7]
            assert sub.messages[0].topic == f"{p}/status"
            assert sub.messages[0].payload == b"online"
            for _ in range(100):  # the PUBACKs may trail the deliveries
                if publisher.outbox_len == 0:
                    break
                await asyncio.sleep(0.02)
            assert publisher.outbox_len == 0
        await gate.close()


async def test_broker_killed_and_restarted(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = private_broker()
    gate = TcpGate(target_host=broker.host, target_port=broker.port)
    await gate.open()
    p = prefix()
    publisher, metrics = make(gate.host, gate.port, p, outbox_size=50)
    faces_topic = publisher.topic("cameras", "c", "faces")
    state_topic = publisher.topic("cameras", "c", "state")
    async with running(publisher):
        async with mqtt_subscriber(f"{p}/#", host=broker.host, port=broker.port) as before:
            assert await publisher.wait_connected(5)
            publisher.set_camera_state(camera_id="c", payload=b"state-1")
            for i in range(10):
                publisher.publish_faces(camera_id="c", payload=face(i))
            await before.wait_for(lambda m: len(seqs(m, faces_topic)) == 10)
            # And acknowledged (`online`, the state, 10 faces): none is sent twice.
            await poll(
                lambda: value(metrics, "mqtt_published_total") == 12,
                timeout=10,
                what="12 acknowledged",
                interval=0.02,
            )
            await asyncio.to_thread(broker.kill)
            await gate.close()  # the publisher must not reach the new broker before `after`
            await before.wait_for(lambda _: before.disconnected)
        for _ in range(50):
            if not publisher.connected:
                break
            await asyncio.sleep(0.05)
        assert not publisher.connected
        assert value(metrics, "mqtt_connected") == 0
        for i in range(10, 30):
            publisher.publish_faces(camera_id="c", payload=face(i))
        await asyncio.to_thread(broker.start)
        async with mqtt_subscriber(f"{p}/#", host=broker.host, port=broker.port) as after:
            await gate.open()
            await after.wait_for(lambda m: len(seqs(m, faces_topic)) >= 20)
            got = seqs(after.messages, faces_topic)
            assert got == list(range(10, 30))  # FIFO, nothing lost
            topics = [m.topic for m in after.messages]
            # online, then the (latest) state, then the outbox.
            assert topics[:2] == [f"{p}/status", state_topic]
            assert after.messages[0].payload == b"online"
            # Re-sent although unchanged: the restarted broker lost its retained store.
            assert after.messages[1].payload == b"state-1"
            publisher.set_camera_state(camera_id="c", payload=b"state-2")  # sent right away
            await after.wait_for(lambda m: m[-1].payload == b"state-2")
        assert value(metrics, "mqtt_dropped_total") == 0
    await gate.close()


async def test_unacknowledged_messages_go_back_to_the_front_in_order(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    broker, gate, publisher, metrics, faces_topic = await gated(private_broker, outbox_size=50)
    async with (
        mqtt_subscriber(faces_topic, host=broker.host, port=broker.port) as sub,
        running(publisher),
    ):
        assert await publisher.wait_connected(5)
        publisher.publish_faces(camera_id="c", payload=face(0))
        # `online` and seq 0 acknowledged: nothing in flight.
        await poll(
            lambda: value(metrics, "mqtt_published_total") == 2,
            timeout=10,
            what="2 acknowledged",
            interval=0.02,
        )
        gate.hold_replies()  # from now on the broker's PUBACKs do not arrive
        for i in range(1, 6):
            publisher.publish_faces(camera_id="c", payload=face(i))
        # All five on the wire at once (the window), none acknowledged.
        await sub.wait_for(lambda m: seqs(m, faces_topic) == [0, 1, 2, 3, 4, 5])
        assert publisher.outbox_len == 5
        assert value(metrics, "mqtt_published_total") == 2
        await gate.close()  # connection lost while waiting for the PUBACKs
        for _ in range(50):
            if not publisher.connected:
                break
            await asyncio.sleep(0.05)
        assert publisher.outbox_len == 5  # back in the outbox, in order
        publisher.publish_faces(camera_id="c", payload=face(6))
        await gate.open()
        await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == 12)
        # At least once: the unacknowledged window again (subscribers dedupe on event_id),
        # in its order, before what came during the outage.
        assert seqs(sub.messages, faces_topic) == [0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6]
        assert value(metrics, "mqtt_dropped_total") == 0
    await gate.close()


async def test_close_with_a_full_unanswered_window_hands_every_message_to_the_next_output(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    """A reload replaces the output: the old one is closed, the new one takes over its queue.
    A broker that stopped answering must not keep the window's messages from the new one."""
    broker, gate, publisher, metrics, faces_topic = await gated(private_broker, outbox_size=100)
    task = asyncio.create_task(publisher.run())
    try:
        async with mqtt_subscriber(faces_topic, host=broker.host, port=broker.port) as sub:
            assert await publisher.wait_connected(5)
            # `online` acknowledged: the session is sending the outbox.
            await poll(
                lambda: value(metrics, "mqtt_published_total") == 1,
                timeout=10,
                what="online acknowledged",
                interval=0.02,
            )
            gate.hold_replies()
            for i in range(40):
                publisher.publish_faces(camera_id="c", payload=face(i))
            await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == IN_FLIGHT_MAX)
            started = time.monotonic()
            await publisher.close()
            took = time.monotonic() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    successor, _ = make(gate.host, gate.port, publisher.topic_prefix)
    successor.take_over(publisher)
    # The bounded flush (0.5 s) and the unanswered `stopped` (1 s), not the publish timeout
    # (2.5 s, what a close stuck on the window's oldest PUBACK takes). Timers, not CPU: the
    # bar does not widen with the load, since 0.1 s more would pass the broken close.
    assert took < 2.4, f"close took {took:.2f} s"
    assert successor.outbox_len == 40
    await gate.close()


@pytest.mark.parametrize(
    ("broker_lines", "window"),
    [
        pytest.param((), IN_FLIGHT_MAX, id="the-window"),
        # Mosquitto announces its `max_inflight_messages` as the MQTT 5 Receive Maximum;
        # more unacknowledged publishes than that are a protocol error. paho does not check.
        pytest.param(("max_inflight_messages 5",), 5 - OTHER_PUBLISHES, id="receive-maximum"),
    ],
)
async def test_unacknowledged_messages_on_the_wire_are_bounded(
    private_broker: Callable[..., MosquittoBroker], broker_lines: tuple[str, ...], window: int
) -> None:
    broker, gate, publisher, metrics, faces_topic = await gated(
        private_broker, broker={"extra": broker_lines}, outbox_size=100
    )
    count = 40
    async with (
        mqtt_subscriber(faces_topic, host=broker.host, port=broker.port) as sub,
        running(publisher),
    ):
        assert await publisher.wait_connected(5)
        # `online` acknowledged: the session is sending the outbox.
        await poll(
            lambda: value(metrics, "mqtt_published_total") == 1,
            timeout=10,
            what="online acknowledged",
            interval=0.02,
        )
        gate.hold_replies()
        for i in range(count):
            publisher.publish_faces(camera_id="c", payload=face(i))
        await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == window)
        await asyncio.sleep(0.5)  # time for more, were the window not bounded
        assert seqs(sub.messages, faces_topic) == list(range(window))
        assert publisher.outbox_len == count
        gate.release_replies()
        await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == count)
        assert seqs(sub.messages, faces_topic) == list(range(count))
        await poll(
            lambda: publisher.outbox_len == 0, timeout=10, what="outbox empty", interval=0.02
        )
        assert publisher.outbox_len == 0
        assert value(metrics, "mqtt_published_total") == count + 1
        assert publisher.connected
    await gate.close()


async def test_qos_1_faces_to_a_distant_broker_are_not_one_per_round_trip(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    """A broker 50 ms away: one PUBACK at a time capped QoS-1 faces at 20 messages/s."""
    # faces at QoS 1
    broker, gate, publisher, _, faces_topic = await gated(private_broker, reply_delay_s=0.05)
    count = 100
    async with (
        mqtt_subscriber(faces_topic, host=broker.host, port=broker.port) as sub,
        running(publisher),
    ):
        assert await publisher.wait_connected(5)
        started = time.monotonic()
        for i in range(count):
            publisher.publish_faces(camera_id="c", payload=face(i))
            await asyncio.sleep(0.001)  # as frames come, not all at once
        await sub.wait_for(lambda m: len(seqs(m, faces_topic)) == count, timeout=15)
        took = time.monotonic() - started
        assert seqs(sub.messages, faces_topic) == list(range(count))
        # One at a time: at least 100 x 50 ms = 5 s; the window: about 0.4 s. The bar widens
        # with the load up to 4.75 s, still under what one at a time takes.
        bar = 2.5 * load_slack(cap=1.9, what="QoS-1 window to a distant broker")
        assert took < bar, f"{count} QoS-1 messages took {took:.2f} s (bar {bar:.2f} s)"
    await gate.close()


def largest_send_buffer() -> int:
    """The most a TCP socket's send buffer grows to on this host (tcp_wmem's maximum)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def test_qos_0_faces_more_than_the_socket_takes_are_written_once_it_drains(
    private_broker: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    """Publishes are written at once (hooks.py); what the kernel cannot take then is left to
    the loop's watch on the socket: written, in order, once it drains."""
    broker = private_broker()
    # The gate's receive buffer small, so the client's send buffer is what fills: its
    # largest size on this host (tcp_wmem's maximum) and 8 MiB more are sure not to fit.
    gate = TcpGate(target_host=broker.host, target_port=broker.port, receive_buffer=65536)
    await gate.open()
    publisher, _ = make(gate.host, gate.port, prefix(), qos=QosConfig(faces=0))
    faces_topic = publisher.topic("cameras", "c", "faces")
    size = 512 * 1024
    count = (largest_send_buffer() + 8 * 1024 * 1024) // size + 1
    async with (
        mqtt_subscriber(faces_topic, host=broker.host, port=broker.port) as sub,
        running(publisher),
    ):
        assert await publisher.wait_connected(5)
        gate.hold_requests()
        for i in range(count):
            body = {"seq": i, "pad": "x" * size}
            publisher.publish_faces(camera_id="c", payload=json.dumps(body).encode())
        await asyncio.sleep(1.0)  # the socket fills; the rest waits in paho
        assert not sub.messages, "the gate did not hold: the test proves nothing"
        gate.release_requests()
        released = time.monotonic()
        await sub.wait_for(lambda m: len(m) == count, timeout=60)
        took = time.monotonic() - released
        assert seqs(sub.messages, faces_topic) == list(range(count))
        # Well under a second. With the watch left out, the rest was never written (the wait
        # above fails), or, with writes at the loop's next turn, waited 20.1 s for a publish
        # timeout and a reconnect, which the log check below catches however slow the host.
        bar = 5.0 * load_slack(cap=2.0, what="faces through a local gate")
        assert took < bar, f"the rest took {took:.1f} s after the socket drained (bar {bar:.1f})"
    lost = [r.getMessage() for r in caplog.records if "lost the connection" in r.getMessage()]
    assert not lost, lost
    await gate.close()


def reconnect_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delay of each reconnect the publisher announced (at DEBUG), in order."""
    return [
        float(r.args[1])  # type: ignore[index, arg-type]
        for r in caplog.records
        if r.name.startswith(PUBLISHER_LOG) and r.getMessage().startswith("MQTT reconnect")
    ]


async def test_backoff_starts_again_after_a_stable_connection(
    private_broker: Callable[..., MosquittoBroker],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection that lasted `STABLE_CONNECTION_S` was a success: the next failure is
    retried within the first delay again, not the grown one."""
    caplog.set_level(logging.DEBUG, logger=PUBLISHER_LOG)
    monkeypatch.setattr(mqtt_connection, "STABLE_CONNECTION_S", 0.5)  # 10 s in production
    broker = private_broker()
    gate = TcpGate(target_host=broker.host, target_port=broker.port)  # closed: refused
    initial_s = 0.01  # the smallest the config allows
    publisher, _ = make(
        gate.host, gate.port, prefix(), reconnect_initial_s=initial_s, reconnect_max_s=100.0
    )
    async with running(publisher):
        # Nine refusals in a row: the delay's ceiling has doubled to about 5 s.
        deadline = asyncio.get_running_loop().time() + 20.0
        while len(reconnect_delays(caplog)) < 9:
            assert asyncio.get_running_loop().time() < deadline, reconnect_delays(caplog)
            await asyncio.sleep(0.01)
        await gate.open()
        assert await publisher.wait_connected(10)
        refusals = len(reconnect_delays(caplog))
        await asyncio.sleep(1.0)  # connected for longer than the (patched) stable time
        await gate.close()  # the connection is cut
        while len(reconnect_delays(caplog)) == refusals:
            assert asyncio.get_running_loop().time() < deadline + 20.0, "no reconnect"
            await asyncio.sleep(0.01)
    delays = reconnect_delays(caplog)
    # Without the reset the ceiling would be 2**9 times the first: one draw in 512 would
    # fall below it by chance.
    assert delays[refusals] <= initial_s, delays
    await gate.close()


async def test_close_with_broker_down_returns_promptly(
    private_broker: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=PUBLISHER_LOG)
    broker = private_broker(start=False)  # nothing listens on its port
    # Full jitter over [0, 30 s]: each refused attempt is followed by a long sleep, mostly.
    publisher, _ = make(
        broker.host, broker.port, prefix(), reconnect_initial_s=30.0, reconnect_max_s=30.0
    )
    task = asyncio.create_task(publisher.run())
    publisher.publish_faces(camera_id="c", payload=face(0))
    loop = asyncio.get_running_loop()
    # Close only once the publisher is inside a reconnect sleep of >= 5 s (the log says so),
    # so a close that sleeps the delay out cannot pass; a shorter draw is waited out.
    deadline = loop.time() + 20.0
    while not [r for r in caplog.records if r.message.startswith("MQTT reconnect")
               and float(r.args[1]) >= 5.0]:  # type: ignore[index, arg-type]  # fmt: skip
        assert loop.time() < deadline, "no reconnect delay of 5 s or more was drawn"
        await asyncio.sleep(0.02)
    started = loop.time()
    await publisher.close()
    # Prompt is well under a second. The bar widens with the load up to 4 s, still below the
    # shortest sleep (5 s) that a close which does not wake the reconnect loop waits out.
    bar = 2.0 * load_slack(cap=2.0, what="publisher close")
    await asyncio.wait_for(task, bar)  # run() ends by itself, without cancellation
    closed_s = loop.time() - started
    logging.getLogger(__name__).info("closed in %.3f s", closed_s)
    assert closed_s < bar, closed_s
    assert not publisher.connected


async def test_close_publishes_stopped_and_no_will(mqtt_broker: BrokerAddress) -> None:
    p = prefix()
    host, port = mqtt_broker.host, mqtt_broker.port
    publisher, _ = make(host, port, p)
    try:
        async with mqtt_subscriber(f"{p}/status", host=host, port=port) as sub:
            task = asyncio.create_task(publisher.run())
            assert await publisher.wait_connected(5)
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"])
            await publisher.close()
            await publisher.close()  # idempotent
            await asyncio.wait_for(task, 2)  # run() returned by itself
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online", b"stopped"])
            await asyncio.sleep(0.5)
            assert [x.payload for x in sub.messages] == [b"online", b"stopped"]  # no Will
        async with mqtt_subscriber(f"{p}/status", host=host, port=port) as late:
            await late.wait_for(lambda m: len(m) == 1)
            assert (late.messages[0].payload, late.messages[0].retain) == (b"stopped", True)
    finally:
        await clear_retained(host, port, f"{p}/status")


async def test_cancel_without_close_says_offline(mqtt_broker: BrokerAddress) -> None:
    p = prefix()
    host, port = mqtt_broker.host, mqtt_broker.port
    publisher, _ = make(host, port, p)
    try:
        async with mqtt_subscriber(f"{p}/status", host=host, port=port) as sub:
            task = asyncio.create_task(publisher.run())
            assert await publisher.wait_connected(5)
            # `online` follows the first connect's manifest read (up to a second).
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"])
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await sub.wait_for(lambda m: [x.payload for x in m] == [b"online", b"offline"])
    finally:
        await clear_retained(host, port, f"{p}/status")


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from edge_facedet.config import MqttConfig
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.output import MqttOutput

    async def main() -> None:
        config = MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), topic_prefix=sys.argv[3])
        publisher = MqttOutput(config=config, node_id="child", metrics=Metrics())
        task = asyncio.create_task(publisher.run())
        if await publisher.wait_connected(10):
            print("connected", flush=True)
        await task

    asyncio.run(main())
    """
)


async def test_sigkill_of_publisher_process_sends_will(mqtt_broker: BrokerAddress) -> None:
    p = prefix()
    host, port = mqtt_broker.host, mqtt_broker.port
    try:
        async with mqtt_subscriber(f"{p}/status", host=host, port=port) as sub:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, host, str(port), p, env=python_env()
            )
            try:
                await sub.wait_for(lambda m: [x.payload for x in m] == [b"online"], timeout=15)
                child.kill()  # SIGKILL: no DISCONNECT, the broker must send the Will
                await sub.wait_for(lambda m: [x.payload for x in m] == [b"online", b"offline"])
            finally:
                if child.returncode is None:
                    child.kill()
                await asyncio.wait_for(child.wait(), 5)
    finally:
        await clear_retained(host, port, f"{p}/status")


async def test_auth_good_and_bad_password(
    private_broker: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = "g00d-Pa55-x1", "b4d-Pa55-y2"
    broker = private_broker(users={"edge": good})
    caplog.set_level(logging.DEBUG)

    # The password comes from the environment mapping the service passes in.
    source = SecretSource(env="EDGE_FACEDET_TEST_MQTT_PW")
    ok, _ = make(broker.host, broker.port, prefix(), username="edge", password=source,
                 environ={"EDGE_FACEDET_TEST_MQTT_PW": good})  # fmt: skip
    async with running(ok):
        assert await ok.wait_connected(5)

    seen = list(caplog.records)  # every record is checked for the passwords at the end
    caplog.clear()
    unset, _ = make(broker.host, broker.port, prefix(), username="edge", password=source,
                    environ={})  # fmt: skip
    async with running(unset) as task:
        assert not await unset.wait_connected(0.3)
        assert not task.done()
    messages = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 1, messages
    assert "EDGE_FACEDET_TEST_MQTT_PW" in messages[0]
    assert "check mqtt.password" in messages[0]

    seen += caplog.records
    caplog.clear()
    wrong, metrics = make(broker.host, broker.port, prefix(), username="edge",
                          password=SecretSource(value=bad))  # fmt: skip
    async with running(wrong) as task:
        await asyncio.sleep(1.5)
        assert not wrong.connected
        assert not task.done()
    assert value(metrics, "mqtt_connected") == 0

    ours = [r for r in caplog.records if r.name.startswith(PUBLISHER_LOG)]
    refusals = [
        r for r in ours if r.levelno == logging.WARNING and "refused the connection" in r.message
    ]
    assert len(refusals) == 1, [r.message for r in ours]  # one line per failure kind
    assert "not authori" in refusals[0].message.lower()
    assert "mqtt.username/password" in refusals[0].message
    assert f"{broker.host}:{broker.port}" in refusals[0].message
    retries = [r for r in ours if "(again)" in r.message]
    delays = [float(r.args[1]) for r in ours if r.message.startswith("MQTT reconnect")]  # type: ignore[index, arg-type]
    assert len(retries) >= 3  # it kept trying...
    assert len(delays) >= 3, [r.message for r in ours]  # (else the next check proves nothing)
    assert all(0 <= d <= 0.2 for d in delays)  # ...within the backoff cap
    for record in [*seen, *caplog.records]:
        text = record.getMessage() + (record.exc_text or "")
        assert good not in text
        assert bad not in text


async def test_acl_denied_status_publish_is_logged(
    private_broker: Callable[..., MosquittoBroker], caplog: pytest.LogCaptureFixture
) -> None:
    p = prefix()
    acl = f"user edge\ntopic write {p}/cameras/#\n"
    broker = private_broker(users={"edge": "pw-acl-1"}, acl=acl)
    publisher, _ = make(broker.host, broker.port, p, username="edge",
                        password=SecretSource(value="pw-acl-1"))  # fmt: skip
    caplog.set_level(logging.INFO, logger=PUBLISHER_LOG)
    async with running(publisher):
        assert await publisher.wait_connected(5)
        for _ in range(50):
            if any("rejected a publish" in r.message for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    denied = [r.message for r in caplog.records if "rejected a publish" in r.message]
    assert denied, [r.message for r in caplog.records]
    assert f"{p}/status" in denied[0]
    assert "not authori" in denied[0].lower()
    assert "'edge'" in denied[0]


async def test_tls_verified_with_client_certificate(
    private_broker: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path / "pki")
    broker = private_broker(tls=tls, require_certificate=True)
    p = prefix()
    tls_config = TlsConfig(
        enabled=True, ca_file=tls.ca_file, cert_file=tls.client_cert, key_file=tls.client_key
    )
    sub_tls = aiomqtt.TLSParameters(
        ca_certs=str(tls.ca_file), certfile=str(tls.client_cert), keyfile=str(tls.client_key)
    )
    for host in ("127.0.0.1", "localhost"):  # both names are in the server certificate
        publisher, _ = make(host, broker.port, p, tls=tls_config)
        async with (
            mqtt_subscriber(f"{p}/status", host=host, port=broker.port, tls_params=sub_tls) as sub,
            running(publisher),
        ):
            assert await publisher.wait_connected(5)
            await sub.wait_for(lambda m: any(x.payload == b"online" for x in m))


async def test_tls_failures_are_explained(
    private_broker: Callable[..., MosquittoBroker],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = make_tls_files(tmp_path / "pki")
    other = make_tls_files(tmp_path / "other", name="other")
    broker = private_broker(tls=tls, require_certificate=True)
    caplog.set_level(logging.WARNING, logger=PUBLISHER_LOG)
    wrong_ca = TlsConfig(
        enabled=True, ca_file=other.ca_file, cert_file=tls.client_cert, key_file=tls.client_key
    )
    no_client_cert = TlsConfig(enabled=True, ca_file=tls.ca_file)
    cases = (
        (wrong_ca, "certificate verify failed"),
        # TLS 1.3: the server's refusal arrives after the handshake, as an alert.
        (no_client_cert, "certificate required"),
    )
    for tls_config, expected in cases:
        caplog.clear()
        publisher, _ = make(broker.host, broker.port, prefix(), tls=tls_config)
        async with running(publisher) as task:
            for _ in range(160):
                if caplog.records:
                    break
                await asyncio.sleep(0.05)
            assert not publisher.connected
            assert not task.done()
        messages = [r.message for r in caplog.records]
        assert messages, "a failure must be logged"
        assert len(messages) == 1, messages  # one line, paho's own ERROR is folded into it
        assert messages[0].startswith(f"TLS handshake with MQTT broker {broker.host}:{broker.port}")
        assert expected in messages[0].lower(), messages
        assert "mqtt.tls.ca_file" in messages[0]


async def test_the_suites_sweep_deletes_only_test_nodes_retained_messages(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    # The session's mqtt_broker fixture runs this sweep on the machine's broker: it must take
    # what the tests' nodes left and nothing of a real node's.
    broker = private_broker()
    address = BrokerAddress(broker.host, broker.port)
    left_by_tests = [
        "edge-facedet/fault-0123456789/status",
        "edge-facedet/test-0123456789/cameras/door/state",
        f"{prefix()}/status",
        "homeassistant/sensor/ha-svc-01234567_door_faces/config",
        "edge-facedet/prom-e2e/cameras/hikers/state",
    ]
    real = [
        "edge-facedet/gate-1/status",
        "edge-facedet/test-lobby/status",
        "homeassistant/sensor/gate-1_door_faces/config",
    ]
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for topic in left_by_tests + real:
            await client.publish(topic, b"x", qos=1, retain=True)
    assert await asyncio.to_thread(delete_test_retained, address) == len(left_by_tests)
    async with mqtt_subscriber("#", host=broker.host, port=broker.port) as live:
        await asyncio.sleep(1.0)
    assert sorted(m.topic for m in live.messages if m.retain) == sorted(real)
