"""Home Assistant MQTT discovery: payloads against HA's documented keys, templates, real broker.

The allowed keys are copied from the HA docs (integrations/sensor.mqtt, binary_sensor.mqtt,
event.mqtt and image.mqtt, "Configuration Variables", and the MQTT discovery page for
`device` and `availability`), as of HA 2026.x. The templates are rendered as HA renders them:
Jinja2 in a sandbox, with `value` (the payload text) and `value_json` (the payload parsed,
when it is JSON), against real faces, camera state and event messages from payloads.py and
events.py and the node's real status strings; undefined names are errors here, so a template
reading a missing key fails. What HA's event entity then does with the rendered text follows
its `_event_received` (homeassistant/components/mqtt/event.py). Control tests show that a
subtly wrong template is caught. The end-to-end test runs the real
publisher against the real broker, then checks what a fresh subscriber gets as retained
messages, that `online` comes after the configs, and how the entities read `online` and
`stopped` as the node published them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from edge_facedet.config import CameraConfig, MqttConfig, PublishConfig, PublishPolicy
from edge_facedet.frames import Detections
from edge_facedet.outputs.build import OutputContext, build_mqtt_output
from edge_facedet.outputs.events import event_payload
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt.homeassistant import (
    AVAILABILITY_TEMPLATE,
    EVENT_TEMPLATE,
    FACE_COUNT_TEMPLATE,
    FACE_PRESENT_TEMPLATE,
    FACE_PRESENT_TRACKS_TEMPLATE,
    binary_sensor_config,
    discovery_messages,
    event_config,
    expire_after_s,
    image_config,
    sensor_config,
)
from edge_facedet.outputs.payloads import camera_state_payload, faces_payload
from edge_facedet.tracking.events import EndReason, EventType, Sighting, TrackEvent
from tests.support.broker import BrokerAddress, mqtt_subscriber
from tests.support.paths import FACE_VIDEO
from tests.support.service import ServiceProcess, service_config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import MosquittoBroker, Received

_COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
    "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id",
    "payload_available", "payload_not_available", "platform", "qos", "state_topic",
    "unique_id", "value_template",
}  # fmt: skip
SENSOR_KEYS = _COMMON_KEYS | {
    "last_reset_value_template", "options", "state_class", "suggested_display_precision",
    "unit_of_measurement",
}  # fmt: skip
BINARY_SENSOR_KEYS = _COMMON_KEYS | {"off_delay", "payload_off", "payload_on"}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
    "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
# event.mqtt and image.mqtt share fewer keys with the sensors (no expire_after, and an image
# has no state topic).
_ENTITY_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "icon", "json_attributes_template", "json_attributes_topic", "name",
    "object_id", "platform", "unique_id",
}  # fmt: skip
EVENT_KEYS = _ENTITY_KEYS | {
    "device_class", "event_types", "payload_available", "payload_not_available", "qos",
    "state_topic", "value_template",
}  # fmt: skip
IMAGE_KEYS = _ENTITY_KEYS | {
    "content_type", "image_encoding", "image_topic", "url_template", "url_topic",
}  # fmt: skip
KEYS_BY_COMPONENT = {
    "sensor": SENSOR_KEYS,
    "binary_sensor": BINARY_SENSOR_KEYS,
    "event": EVENT_KEYS,
    "image": IMAGE_KEYS,
}
AVAILABILITY_KEYS = {"payload_available", "payload_not_available", "topic", "value_template"}
SENSOR_STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}


def camera(**overrides: Any) -> CameraConfig:
    fields: dict[str, Any] = {"id": "front-door", "name": "Front door", "url": "/dev/video0"}
    fields.update(overrides)
    return CameraConfig.model_validate(fields)


# HA renders MQTT templates in a sandboxed Jinja2 environment (homeassistant.helpers.template).
# StrictUndefined is stricter than HA, which renders an undefined name as empty: a misspelt
# key then fails here with its name instead of quietly becoming "0" or "OFF".
_JINJA = SandboxedEnvironment(undefined=StrictUndefined)
FACE_COUNTS = (0, 1, 2, 5)
# What the node publishes on <prefix>/status (mqtt/connection.py: Last Will; mqtt/session.py:
# birth, clean stop).
NODE_STATUSES = {"online": True, "offline": False, "stopped": False}


def render(template: str, payload: str) -> str:
    """The template's result as HA computes it: `value`, plus `value_json` if it parses."""
    variables: dict[str, Any] = {"value": payload}
    with contextlib.suppress(ValueError):
        variables["value_json"] = json.loads(payload)
    return _JINJA.from_string(template).render(variables).strip()


def faces_message(count: int) -> str:
    """A real faces message with `count` faces, built by the service's own payload builder."""
    boxes = np.array(
        [[10.0 + 40 * i, 20.0, 40.0 + 40 * i, 60.0] for i in range(count)], np.float32
    ).reshape(-1, 4)
    detections = Detections(
        boxes_px=boxes,
        boxes_norm=boxes / np.array([640, 480, 640, 480], np.float32),
        confidences=np.linspace(0.9, 0.6, count, dtype=np.float32),
    )
    payload = faces_payload(
        node_id="n",
        run_id="r",
        camera_id="front-door",
        seq=count,
        capture_time=datetime.now(timezone.utc),
        latency_ms=12.0,
        frame_width=640,
        frame_height=480,
        model="face-detection-0204",
        device="CPU",
        detections=detections,
    )
    return payload.decode()


def count_errors(template: str) -> list[str]:
    """Where `template` does not give the number of faces, per real faces message."""
    errors = []
    for count in FACE_COUNTS:
        try:
            got = render(template, faces_message(count))
        except TemplateError as error:
            got = f"error: {error}"
        if got != str(count):
            errors.append(f"{count} faces -> {got!r}")
    return errors


def presence_errors(template: str, *, on: str, off: str) -> list[str]:
    """Where `template` does not give `on` exactly when a real faces message has faces."""
    errors = []
    for count in FACE_COUNTS:
        try:
            got = render(template, faces_message(count))
        except TemplateError as error:
            got = f"error: {error}"
        if got != (on if count else off):
            errors.append(f"{count} faces -> {got!r}")
    return errors


def availability_errors(entry: dict[str, Any], statuses: dict[str, bool]) -> list[str]:
    """Where the availability entry does not map a node status to available / not available."""
    errors = []
    for status, available in statuses.items():
        try:
            got = render(entry["value_template"], status)
        except TemplateError as error:
            got = f"error: {error}"
        expected = entry["payload_available"] if available else entry["payload_not_available"]
        if got != expected:
            errors.append(f"{status} -> {got!r}")
    return errors


def test_sensor_payload_uses_only_documented_keys() -> None:
    body = sensor_config(node_id="gate-1", topic_prefix="site/gate-1", camera=camera())
    assert set(body) <= SENSOR_KEYS, set(body) - SENSOR_KEYS
    assert set(body["device"]) <= DEVICE_KEYS
    for entry in body["availability"]:
        assert set(entry) <= AVAILABILITY_KEYS
    # availability and availability_topic are mutually exclusive in HA.
    assert "availability_topic" not in body
    assert body["state_class"] in SENSOR_STATE_CLASSES
    assert body["unit_of_measurement"] == "faces"
    assert body["state_topic"] == "site/gate-1/cameras/front-door/faces"
    assert body["unique_id"] == "edge-facedet_gate-1_front-door_faces"
    assert body["default_entity_id"] == "sensor.gate_1_front_door_faces"
    assert body["name"] == "Front door faces"
    assert body["device"]["identifiers"] == ["edge-facedet_gate-1"]
    assert {"name", "manufacturer", "model", "sw_version"} <= set(body["device"])


def test_binary_sensor_payload_uses_only_documented_keys() -> None:
    body = binary_sensor_config(node_id="gate-1", topic_prefix="site/gate-1", camera=camera())
    assert set(body) <= BINARY_SENSOR_KEYS, set(body) - BINARY_SENSOR_KEYS
    assert set(body["device"]) <= DEVICE_KEYS
    assert body["device_class"] == "occupancy"
    assert body["default_entity_id"] == "binary_sensor.gate_1_front_door_face_present"
    assert (body["payload_on"], body["payload_off"]) == ("ON", "OFF")
    # Both entities belong to the same device.
    sensor = sensor_config(node_id="gate-1", topic_prefix="site/gate-1", camera=camera())
    assert body["device"] == sensor["device"]
    assert body["unique_id"] != sensor["unique_id"]


def test_key_sets_would_catch_an_undocumented_key() -> None:
    assert "value_templ" not in SENSOR_KEYS
    assert "device_class" in BINARY_SENSOR_KEYS
    assert "state_class" not in BINARY_SENSOR_KEYS  # binary sensors have no state class


def test_templates_render_face_count_and_presence_from_real_messages() -> None:
    untracked = camera(tracking={"enabled": False})
    sensor = sensor_config(node_id="n", topic_prefix="p", camera=untracked)
    binary = binary_sensor_config(node_id="n", topic_prefix="p", camera=untracked)
    assert binary["state_topic"] == sensor["state_topic"] == "p/cameras/front-door/faces"
    assert count_errors(sensor["value_template"]) == []
    on, off = binary["payload_on"], binary["payload_off"]
    assert presence_errors(binary["value_template"], on=on, off=off) == []


def test_availability_maps_every_node_status() -> None:
    (entry,) = sensor_config(node_id="n", topic_prefix="site/n", camera=camera())["availability"]
    assert entry["topic"] == "site/n/status"
    assert {entry["payload_available"], entry["payload_not_available"]} == {"online", "offline"}
    assert availability_errors(entry, NODE_STATUSES) == []
    (binary_entry,) = binary_sensor_config(node_id="n", topic_prefix="site/n", camera=camera())[
        "availability"
    ]
    assert binary_entry == entry


@pytest.mark.parametrize(
    "wrong",
    [
        "{{ value_json.faces | length - 1 }}",
        "{{ value_json.face | length }}",  # misspelt key
        "{{ value_json.faces | length if value_json.faces | length < 2 else 1 }}",
        "{{ value | length }}",  # the payload text's length
    ],
)
def test_a_wrong_count_template_is_caught(wrong: str) -> None:
    assert count_errors(wrong)


@pytest.mark.parametrize(
    "wrong",
    [
        "{{ 'ON' if value_json.faces | length > 1 else 'OFF' }}",  # misses a single face
        "{{ 'ON' if value_json.faces else 'on' }}",
        "{{ 'ON' if value_json.face | length > 0 else 'OFF' }}",  # misspelt key
        "{{ 'ON' if value else 'OFF' }}",  # any message at all
    ],
)
def test_a_wrong_presence_template_is_caught(wrong: str) -> None:
    assert presence_errors(wrong, on="ON", off="OFF")


@pytest.mark.parametrize(
    "wrong",
    [
        "{{ value }}",  # `stopped` is neither payload: HA would keep the entity available
        "{{ 'offline' if value == 'offline' else 'online' }}",  # `stopped` counts as online
        "{{ 'online' if value_json == 'online' else 'offline' }}",  # status is not JSON
    ],
)
def test_a_wrong_availability_template_is_caught(wrong: str) -> None:
    entry = {
        "value_template": wrong,
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    assert availability_errors(entry, NODE_STATUSES)


def test_templates_parse_as_jinja_expressions() -> None:
    for template in (FACE_COUNT_TEMPLATE, FACE_PRESENT_TEMPLATE, AVAILABILITY_TEMPLATE):
        _JINJA.parse(template)  # a syntax error raises
        assert re.fullmatch(r"\{\{ [^{}]+ \}\}", template), template


# -- tracking: face_present from open_tracks, the event entity, the snapshot image ----------

T0 = datetime(2026, 11, 25, 16, 0, 0, 123456, tzinfo=timezone.utc)
OPEN_TRACKS = (0, 1, 3)


def state_message(open_tracks: int) -> str:
    """A real camera state, built by the service's own payload builder."""
    return camera_state_payload(
        camera_id="front-door",
        state="streaming",
        fps_in=25.0,
        fps_out=5.0,
        last_error=None,
        reconnects=0,
        frame_width=640,
        frame_height=480,
        now=T0,
        open_tracks=open_tracks,
    ).decode()


def tracks_presence_errors(template: str, *, on: str, off: str) -> list[str]:
    """Where `template` does not give `on` exactly when a real state has open tracks."""
    errors = []
    for count in OPEN_TRACKS:
        try:
            got = render(template, state_message(count))
        except TemplateError as error:
            got = f"error: {error}"
        if got != (on if count else off):
            errors.append(f"{count} open tracks -> {got!r}")
    return errors


def event_message(kind: EventType) -> str:
    """A real event message of `kind`, built by the service's own payload builder."""
    seen = Sighting(
        time=T0,
        box_px=(100.0, 50.0, 160.0, 130.0),
        box_norm=(0.16, 0.1, 0.25, 0.27),
        confidence=0.9,
        quality=0.7,
        height_px=80.0,
    )
    end = kind is EventType.END
    event = TrackEvent(
        type=kind,
        event_id="n-front-door-r-t1",
        camera_id="front-door",
        start_time=T0,
        last_time=T0 + timedelta(seconds=2),
        end_time=T0 + timedelta(seconds=4) if end else None,
        frames_seen=10,
        frame_width=640,
        frame_height=480,
        current=seen,
        best=seen,
        snapshot=True,
        snapshot_source="detect",
        end_reason=EndReason.LOST if end else None,
    )
    return event_payload(event=event).decode()


def _json_object(text: str) -> dict[str, Any]:
    """HA's json_loads_object: JSON that must be an object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError(f"not a JSON object: {type(value).__name__}")
    return value


def ha_event(template: str, payload: str, event_types: list[str]) -> tuple[str, Any]:
    """What HA's MQTT event entity does with one message, step by step as its
    `_event_received` does: ("fired", (type, attributes)), ("ignored", text) when the
    rendered text is empty, "None" or "{}" (logged at debug), or ("warning", why)."""
    try:
        rendered = render(template, payload)
    except (TemplateError, TypeError, ValueError) as error:  # HA wraps any render error
        return "warning", f"template error: {error}"
    if not rendered or rendered in {"None", "{}"}:
        return "ignored", rendered
    try:
        attributes = _json_object(rendered)
        event_type = str(attributes.pop("event_type"))
    except KeyError:
        return "warning", "`event_type` missing"
    except (ValueError, TypeError):
        return "warning", f"no valid JSON event payload: {rendered!r}"
    if event_type not in event_types:
        return "warning", f"invalid event type {event_type}"
    return "fired", (event_type, attributes)


def event_errors(template: str, event_types: list[str]) -> list[str]:
    """Where HA would not fire exactly `new` and `end`, quietly ignoring `update`."""
    errors = []
    for kind in EventType:
        outcome, detail = ha_event(template, event_message(kind), event_types)
        if kind is EventType.UPDATE:
            if outcome != "ignored":
                errors.append(f"update -> {outcome}: {detail}")
        elif outcome != "fired" or detail[0] != kind.value:
            errors.append(f"{kind.value} -> {outcome}: {detail}")
    return errors


def test_face_present_follows_open_tracks_with_tracking() -> None:
    body = binary_sensor_config(node_id="gate-1", topic_prefix="site/gate-1", camera=camera())
    assert set(body) <= BINARY_SENSOR_KEYS, set(body) - BINARY_SENSOR_KEYS
    assert body["state_topic"] == "site/gate-1/cameras/front-door/state"
    assert body["value_template"] == FACE_PRESENT_TRACKS_TEMPLATE
    # The state is retained and says 0 itself: neither an expiry nor an off delay.
    assert "expire_after" not in body
    assert "off_delay" not in body
    on, off = body["payload_on"], body["payload_off"]
    assert tracks_presence_errors(body["value_template"], on=on, off=off) == []


@pytest.mark.parametrize(
    "wrong",
    [
        "{{ 'ON' if value_json.open_tracks > 1 else 'OFF' }}",  # misses a single track
        "{{ 'ON' if value_json.open_track > 0 else 'OFF' }}",  # misspelt key
        "{{ 'ON' if value_json.state == 'streaming' else 'OFF' }}",  # any streaming camera
        FACE_PRESENT_TEMPLATE,  # the faces topic's template on the state topic
    ],
)
def test_a_wrong_open_tracks_template_is_caught(wrong: str) -> None:
    assert tracks_presence_errors(wrong, on="ON", off="OFF")


def test_event_entity_config_uses_only_documented_keys() -> None:
    body = event_config(node_id="gate-1", topic_prefix="site/gate-1", camera=camera())
    assert set(body) <= EVENT_KEYS, set(body) - EVENT_KEYS
    assert set(body["device"]) <= DEVICE_KEYS
    assert body["state_topic"] == "site/gate-1/cameras/front-door/events"
    assert body["event_types"] == ["new", "end"]
    assert body["default_entity_id"] == "event.gate_1_front_door_events"
    assert body["unique_id"] == "edge-facedet_gate-1_front-door_events"
    assert (
        body["device"]
        == sensor_config(node_id="gate-1", topic_prefix="site/gate-1", camera=camera())["device"]
    )


def test_event_template_fires_new_and_end_and_ignores_updates() -> None:
    body = event_config(node_id="n", topic_prefix="p", camera=camera())
    assert body["value_template"] == EVENT_TEMPLATE
    assert event_errors(EVENT_TEMPLATE, body["event_types"]) == []
    outcome, (event_type, attributes) = ha_event(
        EVENT_TEMPLATE, event_message(EventType.END), body["event_types"]
    )
    assert (outcome, event_type) == ("fired", "end")
    assert attributes == {
        "event_id": "n-front-door-r-t1",
        "end_reason": "lost",
        "duration_s": 4.0,
        "snapshot": True,
    }


@pytest.mark.parametrize(
    "wrong",
    [
        # Every event type: HA logs "Invalid event type update" for each update.
        "{{ {'event_type': value_json.type} | tojson }}",
        # A Python dict's text, not JSON: HA logs "No valid JSON event payload".
        "{{ {'event_type': value_json.type} if value_json.type != 'update' else '' }}",
        "{{ {'event_type': value_json.type} | tojson if value_json.type == 'new' else '' }}",
        "{{ value }}",  # our message as it is: no `event_type`
        "{{ {'event_type': value_json.event} | tojson if value_json.type != 'update' else '' }}",
    ],
)
def test_a_wrong_event_template_is_caught(wrong: str) -> None:
    assert event_errors(wrong, ["new", "end"])


def test_image_entity_only_where_snapshots_are_on() -> None:
    with_snapshots = camera(snapshots={"mode": "crop"})
    body = image_config(node_id="gate-1", topic_prefix="site/gate-1", camera=with_snapshots)
    assert set(body) <= IMAGE_KEYS, set(body) - IMAGE_KEYS
    assert body["image_topic"] == "site/gate-1/cameras/front-door/snapshot"
    assert body["content_type"] == "image/jpeg"
    assert "image_encoding" not in body  # raw JPEG bytes, not base64
    assert body["default_entity_id"] == "image.gate_1_front_door_snapshot"
    components = {
        json.loads(m.payload)["unique_id"].rsplit("_", 1)[-1]
        for m in discovery_messages(node_id="n", topic_prefix="p", cameras=[with_snapshots])
        if m.payload
    }
    assert "snapshot" in components
    for off in (camera(), camera(snapshots={"mode": "off"}), camera(tracking={"enabled": False})):
        images = [
            m
            for m in discovery_messages(node_id="n", topic_prefix="p", cameras=[off])
            if "/image/" in m.topic
        ]
        # Announced empty: removes an image entity an earlier configuration announced.
        assert [(m.topic, m.payload) for m in images] == [
            ("homeassistant/image/n_front-door_snapshot/config", b"")
        ]


def test_entities_follow_tracking_and_the_publish_policy() -> None:
    def entities(**overrides: Any) -> list[str]:
        messages = discovery_messages(node_id="n", topic_prefix="p", cameras=[camera(**overrides)])
        # Every possible entity has a message; an empty one removes what a camera lacks.
        assert len(messages) == 4
        return [m.topic.split("/")[1] + ":" + m.topic.split("_")[-1][: -len("/config")]
                for m in messages if m.payload]  # fmt: skip

    assert entities() == ["sensor:faces", "binary_sensor:present", "event:events"]
    # No faces messages with policy off: no face-count sensor that would never change.
    assert entities(publish={"policy": "off"}) == ["binary_sensor:present", "event:events"]
    # Without tracking there are no events; face_present reads the faces messages.
    assert entities(tracking={"enabled": False}) == ["sensor:faces", "binary_sensor:present"]
    assert entities(snapshots={"mode": "frame"}) == [
        "sensor:faces", "binary_sensor:present", "event:events", "image:snapshot",
    ]  # fmt: skip


def test_expire_after_follows_the_publish_policy() -> None:
    on_change = camera(publish=PublishConfig(policy=PublishPolicy.ON_CHANGE, heartbeat_s=10))
    assert expire_after_s(on_change) == 30
    assert sensor_config(node_id="n", topic_prefix="p", camera=on_change)["expire_after"] == 30
    every = camera(publish=PublishConfig(policy=PublishPolicy.EVERY_FRAME), detect_fps=5)
    assert expire_after_s(every) == 10
    on_faces = camera(
        publish=PublishConfig(policy=PublishPolicy.ON_FACES),
        detect_fps=5,
        tracking={"enabled": False},
    )
    assert expire_after_s(on_faces) is None
    binary = binary_sensor_config(node_id="n", topic_prefix="p", camera=on_faces)
    assert "expire_after" not in binary
    assert binary["off_delay"] == 10


def test_discovery_messages_topics_and_disabled_cameras() -> None:
    messages = discovery_messages(
        node_id="gate-1",
        topic_prefix="edge-facedet/gate-1",
        cameras=[camera(), camera(id="yard", enabled=False), camera(id="lobby", name=None)],
    )
    assert [(m.topic, bool(m.payload)) for m in messages] == [
        ("homeassistant/sensor/gate-1_front-door_faces/config", True),
        ("homeassistant/binary_sensor/gate-1_front-door_face_present/config", True),
        ("homeassistant/event/gate-1_front-door_events/config", True),
        ("homeassistant/image/gate-1_front-door_snapshot/config", False),
        ("homeassistant/sensor/gate-1_lobby_faces/config", True),
        ("homeassistant/binary_sensor/gate-1_lobby_face_present/config", True),
        ("homeassistant/event/gate-1_lobby_events/config", True),
        ("homeassistant/image/gate-1_lobby_snapshot/config", False),
    ]
    lobby = json.loads(messages[4].payload)
    assert lobby["name"] == "lobby faces"


def test_no_camera_credentials_in_discovery() -> None:
    secret_camera = camera(url="rtsp://viewer:s3cr3t-pw@192.0.2.1/stream")
    payloads = b"".join(
        m.payload
        for m in discovery_messages(node_id="n", topic_prefix="p", cameras=[secret_camera])
    )
    assert b"s3cr3t-pw" not in payloads
    assert b"192.0.2.1" not in payloads


# -- real broker ----------------------------------------------------------------------------


async def _collect_retained(broker: BrokerAddress, node: str) -> list[Received]:
    """What a fresh subscriber receives right after subscribing: the retained configs."""
    async with mqtt_subscriber(
        "homeassistant/+/+/config", host=broker.host, port=broker.port
    ) as collector:
        await asyncio.sleep(0.5)
        return [m for m in collector.messages if m.retain and f"/{node}_" in m.topic]


async def _wait_retained(
    broker: BrokerAddress, node: str, *, count: int, timeout: float = 15.0
) -> list[Received]:
    """Retained configs of `node`, polled with fresh subscribers until `count` are there."""
    deadline = asyncio.get_running_loop().time() + timeout
    retained = await _collect_retained(broker, node)
    while len(retained) < count and asyncio.get_running_loop().time() < deadline:
        retained = await _collect_retained(broker, node)
    return retained


async def test_publisher_sends_retained_discovery_before_online(
    mqtt_broker: BrokerAddress,
) -> None:
    node = f"ha-{uuid.uuid4().hex[:8]}"
    prefix = f"edge-facedet/{node}"
    config = MqttConfig(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        home_assistant_discovery=True,
        reconnect_initial_s=0.2,
        reconnect_max_s=1.0,
    )
    metrics = Metrics()
    publisher = build_mqtt_output(
        config=config, node_id=node, context=OutputContext(metrics=metrics)
    )
    cameras = [camera(id="door"), camera(id="yard", name="Yard", snapshots={"mode": "crop"})]
    # As the service wires it: announced before the first connect.
    publisher.announce(cameras=cameras)
    discovery_topics = {
        f"homeassistant/sensor/{node}_door_faces/config",
        f"homeassistant/binary_sensor/{node}_door_face_present/config",
        f"homeassistant/event/{node}_door_events/config",
        f"homeassistant/sensor/{node}_yard_faces/config",
        f"homeassistant/binary_sensor/{node}_yard_face_present/config",
        f"homeassistant/event/{node}_yard_events/config",
        f"homeassistant/image/{node}_yard_snapshot/config",
    }
    order: list[str] = []
    # Only this node's topics: the shared broker holds other tests' retained messages.
    async with mqtt_subscriber(
        ("homeassistant/#", f"{prefix}/#"), host=mqtt_broker.host, port=mqtt_broker.port
    ) as live:
        task = asyncio.create_task(publisher.run())
        try:
            await live.wait_for(
                lambda messages: any(m.topic == f"{prefix}/status" for m in messages), timeout=10
            )
            order = [
                m.topic
                for m in live.messages
                if m.topic in discovery_topics or m.topic == f"{prefix}/status"
            ]
            # A fresh subscriber (Home Assistant starting later) gets every config, retained.
            retained = await _collect_retained(mqtt_broker, node)
            assert {m.topic for m in retained} == discovery_topics
            for message in retained:
                body = json.loads(message.payload)
                assert set(body) <= KEYS_BY_COMPONENT[message.topic.split("/")[1]]
                assert body["availability"][0]["topic"] == f"{prefix}/status"
                topic = body.get("state_topic", body.get("image_topic"))
                assert topic.startswith(f"{prefix}/cameras/")
            await publisher.close()
            # The statuses as the node sent them (`online`, then `stopped` at a clean close),
            # read through the availability entry HA got.
            await live.wait_for(
                lambda messages: any(m.payload == b"stopped" for m in messages), timeout=10
            )
            sent = [m.payload.decode() for m in live.messages if m.topic == f"{prefix}/status"]
            assert sent == ["online", "stopped"]
            entry = json.loads(retained[0].payload)["availability"][0]
            assert availability_errors(entry, {"online": True, "stopped": False}) == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Leave the shared broker clean: empty retained payloads delete the configs.
            await _clear_retained(mqtt_broker, [*discovery_topics, f"{prefix}/status"])
    assert order[-1] == f"{prefix}/status"
    assert set(order[:-1]) == discovery_topics, order


async def test_discovery_off_publishes_nothing_under_homeassistant(
    mqtt_broker: BrokerAddress,
) -> None:
    node = f"ha-off-{uuid.uuid4().hex[:8]}"
    config = MqttConfig(host=mqtt_broker.host, port=mqtt_broker.port)
    publisher = build_mqtt_output(
        config=config, node_id=node, context=OutputContext(metrics=Metrics())
    )
    publisher.announce(cameras=[camera()])
    async with mqtt_subscriber(
        "homeassistant/#", host=mqtt_broker.host, port=mqtt_broker.port
    ) as live:
        task = asyncio.create_task(publisher.run())
        try:
            assert await publisher.wait_connected(10)
            await asyncio.sleep(0.5)
            await publisher.close()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _clear_retained(mqtt_broker, [f"edge-facedet/{node}/status"])
        assert [m.topic for m in live.messages if node in m.topic] == []


async def test_discovery_is_republished_after_a_broker_restart(
    private_broker: Callable[..., MosquittoBroker],
) -> None:
    # No persistence: the restarted broker has lost every retained message.
    broker = private_broker()
    address = BrokerAddress(broker.host, broker.port)
    config = MqttConfig(
        host=broker.host,
        port=broker.port,
        home_assistant_discovery=True,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.3,
    )
    publisher = build_mqtt_output(
        config=config, node_id="restart", context=OutputContext(metrics=Metrics())
    )
    publisher.announce(cameras=[camera(id="door")])
    task = asyncio.create_task(publisher.run())
    try:
        assert await publisher.wait_connected(10)
        assert len(await _wait_retained(address, "restart", count=3)) == 3
        broker.kill()
        while publisher.connected:
            await asyncio.sleep(0.05)
        # Started again with `persistence false`: its retained store is empty, so configs
        # found now were published on the reconnect.
        broker.start()
        retained = await _wait_retained(address, "restart", count=3)
        assert sorted(m.topic for m in retained) == [
            "homeassistant/binary_sensor/restart_door_face_present/config",
            "homeassistant/event/restart_door_events/config",
            "homeassistant/sensor/restart_door_faces/config",
        ]
        await publisher.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.slow
async def test_running_service_announces_its_cameras(
    tmp_path: Path, model_root: Path, mqtt_broker: BrokerAddress
) -> None:
    node = f"ha-svc-{uuid.uuid4().hex[:8]}"
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=tmp_path / "ov-cache",
        mqtt_port=mqtt_broker.port,
        cameras=[{"id": "faces", "name": "Faces clip", "url": str(FACE_VIDEO), "loop": True}],
    )
    config["mqtt"]["home_assistant_discovery"] = True
    service = ServiceProcess(directory=tmp_path / "service", config=config)
    topics = [
        f"homeassistant/sensor/{node}_faces_faces/config",
        f"homeassistant/binary_sensor/{node}_faces_face_present/config",
        f"homeassistant/event/{node}_faces_events/config",
    ]
    try:
        service.start()
        service.wait_ready()
        retained = await _wait_retained(mqtt_broker, node, count=3)
        assert sorted(m.topic for m in retained) == sorted(topics)
        sensor = json.loads(next(m.payload for m in retained if "/sensor/" in m.topic))
        assert sensor["name"] == "Faces clip faces"
        assert sensor["state_topic"] == f"edge-facedet/{node}/cameras/faces/faces"
        # every_frame (the test config's policy) at 5 fps: expire after 10 s of silence.
        assert sensor["expire_after"] == 10
        # The state topic the entities read really carries faces messages.
        async with mqtt_subscriber(
            sensor["state_topic"], host=mqtt_broker.host, port=mqtt_broker.port
        ) as live:
            await live.wait_for(lambda messages: len(messages) >= 2, timeout=20)
            payload = live.messages[-1].payload.decode()
            faces = len(json.loads(payload)["faces"])
            assert render(sensor["value_template"], payload) == str(faces)
        code, _ = service.terminate()
        assert code == 0
    finally:
        service.close()
        await _clear_retained(mqtt_broker, [*topics, f"edge-facedet/{node}/status"])


async def _clear_retained(broker: BrokerAddress, topics: list[str]) -> None:
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port) as client:
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)
