"""The output seam without a broker: the memory output, the pipeline's fan-out, topics, outbox.

The pipeline is driven as the scheduler and the readers drive it (`handle_batch`,
`handle_status`), with two outputs in its list; both must get the same messages.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from edge_facedet.config import CameraConfig, MqttConfig, ServiceConfig
from edge_facedet.frames import Frame
from edge_facedet.inference.detector import BatchResult
from edge_facedet.outputs.build import OutputContext, build_mqtt_output, build_outputs
from edge_facedet.outputs.memory import MemoryOutput, Record
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt.homeassistant import discovery_messages
from edge_facedet.outputs.mqtt.outbox import LatestByKey, Message, Outbox
from edge_facedet.outputs.mqtt.output import MqttOutput
from edge_facedet.outputs.mqtt.topics import (
    Topics,
    check_topic,
    default_prefix,
    discovery_topic,
)
from edge_facedet.outputs.pipeline import ResultPipeline
from edge_facedet.sources.status import CameraState, CameraStatus

if TYPE_CHECKING:
    from edge_facedet.outputs.base import Output


def camera(**overrides: Any) -> CameraConfig:
    fields: dict[str, Any] = {"id": "door", "url": "/dev/video0"}
    fields.update(overrides)
    return CameraConfig.model_validate(fields)


def frame(camera_id: str, seq: int) -> Frame:
    return Frame(
        camera_id=camera_id,
        seq=seq,
        capture_time=datetime.now(timezone.utc),
        capture_monotonic=0.0,
        width=640,
        height=480,
        image=np.zeros((448, 448, 3), np.uint8),
    )


def status(camera_id: str, state: CameraState) -> CameraStatus:
    return CameraStatus(
        camera_id=camera_id,
        state=state,
        fps_in=25.0,
        fps_out=5.0,
        last_error=None,
        reconnects=0,
        frame_width=640,
        frame_height=480,
    )


def pipeline_with(*outputs: MemoryOutput, cameras: list[CameraConfig]) -> ResultPipeline:
    return ResultPipeline(
        node_id="n1",
        run_id="r1",
        cameras=cameras,
        outputs=outputs,
        metrics=Metrics(),
        model_name="face-detection-0204/FP16",
        device="CPU",
    )


def test_pipeline_fans_out_faces_and_states_to_every_output() -> None:
    first, second = MemoryOutput(name="a"), MemoryOutput(name="b")
    cameras = [camera(id="door", publish={"policy": "every_frame"}), camera(id="yard")]
    pipeline = pipeline_with(first, second, cameras=cameras)
    face = np.array([[0.9, 0.1, 0.1, 0.3, 0.4]], np.float32)  # conf, x0, y0, x1, y1 (norm)
    none = np.zeros((0, 5), np.float32)
    pipeline.handle_batch(
        [frame("door", 0), frame("yard", 0)], BatchResult(rows=[face, none], inference_seconds=0.01)
    )
    pipeline.handle_status(status("door", CameraState.STREAMING))
    pipeline.handle_status(status("yard", CameraState.RECONNECTING))

    assert first.records == second.records
    faces = [json.loads(p) for p in first.faces()]
    # every_frame publishes both frames; yard's default policy publishes its first frame too.
    assert [(f["camera"], len(f["faces"])) for f in faces] == [("door", 1), ("yard", 0)]
    assert [json.loads(p)["state"] for p in first.states()] == ["streaming", "reconnecting"]
    assert first.states("yard") == second.states("yard")


async def test_memory_output_lifetime_and_wait_for() -> None:
    memory = MemoryOutput()
    output: Output = memory  # it is an Output, as the service sees it
    output.announce(cameras=[camera(id="door")])
    assert await output.wait_ready(0)
    task = asyncio.create_task(output.run())
    waiter = asyncio.create_task(memory.wait_for(lambda m: len(m.faces()) == 2, timeout=5))
    await asyncio.sleep(0)
    output.publish_faces(camera_id="door", payload=b"1")
    output.set_camera_state(camera_id="door", payload=b"s")
    output.publish_faces(camera_id="door", payload=b"2")
    await waiter
    await output.close()
    await asyncio.wait_for(task, 1)  # run() returns after close()
    assert memory.ran and memory.closed
    assert memory.announced == ["door"]
    assert memory.records == [
        Record("faces", "door", b"1"),
        Record("state", "door", b"s"),
        Record("faces", "door", b"2"),
    ]
    with pytest.raises(TimeoutError):
        await memory.wait_for(lambda m: len(m.faces()) == 3, timeout=0.05)


async def test_build_outputs_gives_mqtt_for_any_config() -> None:
    config = ServiceConfig.model_validate({"node_id": "n1", "cameras": [camera().model_dump()]})
    outputs = build_outputs(config, context=OutputContext(metrics=Metrics()))
    assert [type(output) for output in outputs] == [MqttOutput]
    assert [output.name for output in outputs] == ["mqtt"]


async def test_mqtt_output_announces_home_assistant_only_when_enabled() -> None:
    # `yard` has snapshots on; `door` has them off, so its retained snapshot is cleared.
    cameras = [camera(id="door"), camera(id="yard", snapshots={"mode": "crop"})]
    for enabled in (False, True):
        output = build_mqtt_output(
            config=MqttConfig(home_assistant_discovery=enabled),
            node_id="n1",
            context=OutputContext(metrics=Metrics()),
        )
        output.announce(cameras=cameras)
        retained = output._retained  # no public view of what waits to be sent
        sent = []
        while retained:
            topic, message = retained.next_unsent()
            sent.append((topic, message.payload))
            retained.sent(topic, message)
        expected = discovery_messages(node_id="n1", topic_prefix="edge-facedet/n1", cameras=cameras)
        cleared = [("edge-facedet/n1/cameras/door/snapshot", b"")]
        # The manifest of the announced cameras, so a later run can clear dropped ones.
        manifest = [("edge-facedet/n1/cameras", b'["door","yard"]')]
        discovery = [(m.topic, m.payload) for m in expected] if enabled else []
        assert sent == cleared + manifest + discovery


def test_topics_are_spelled_once() -> None:
    topics = Topics.for_node(node_id="n1")
    assert topics.prefix == default_prefix("n1") == "edge-facedet/n1"
    assert topics.status == "edge-facedet/n1/status"
    assert topics.camera_state("door") == "edge-facedet/n1/cameras/door/state"
    assert topics.camera_faces("door") == "edge-facedet/n1/cameras/door/faces"
    assert Topics.for_node(node_id="n1", prefix="site/a").status == "site/a/status"
    assert (
        discovery_topic(component="sensor", object_id="n1_door_faces")
        == "homeassistant/sensor/n1_door_faces/config"
    )
    for bad in ("a/b", "#", "+", "", "a\0"):
        with pytest.raises(ValueError, match="invalid topic level"):
            topics.camera_faces(bad)
    for bad in ("a/#", "a/+/b", "$SYS/x", ""):
        with pytest.raises(ValueError, match="invalid topic"):
            check_topic(bad)
    assert check_topic("homeassistant/sensor/x/config") == "homeassistant/sensor/x/config"


def test_outbox_drops_oldest_and_requeues_at_the_front() -> None:
    dropped: list[None] = []
    outbox = Outbox(maxlen=3, on_drop=lambda: dropped.append(None))
    for seq in range(5):
        outbox.append(Message("t", str(seq).encode(), 1))
    assert len(dropped) == 2
    first = outbox.popleft()
    assert first.payload == b"2"
    outbox.requeue(first)  # not acknowledged: first again
    assert [outbox.popleft().payload for _ in range(3)] == [b"2", b"3", b"4"]
    assert not outbox
    for seq in range(3):
        outbox.append(Message("t", str(seq).encode(), 1))
    outbox.requeue(Message("t", b"old", 1))  # full: the requeued one is the oldest, dropped
    assert len(dropped) == 3
    assert [outbox.popleft().payload for _ in range(3)] == [b"0", b"1", b"2"]


def test_latest_by_key_keeps_a_newer_message_set_in_flight_unsent() -> None:
    latest = LatestByKey()
    one, two = Message("s", b"1", 1, retain=True), Message("s", b"2", 1, retain=True)
    latest.set("door", one)
    key, in_flight = latest.next_unsent()
    latest.set("door", two)  # arrives while `one` is being published
    latest.sent(key, in_flight)
    assert latest and latest.next_unsent() == ("door", two)
    latest.sent("door", two)
    assert not latest
    latest.mark_all_unsent()  # reconnect: the broker may have lost it
    assert latest.next_unsent() == ("door", two)
