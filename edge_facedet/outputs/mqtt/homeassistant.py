"""Home Assistant MQTT discovery: the retained config messages that make cameras HA entities.

Owns the discovery wire format, built here with no I/O (the MQTT output sends the result,
retained, on every connect before `online`; topics.py names every topic used). Per camera,
two entities on one device per node:

* `homeassistant/sensor/<node>_<camera>_faces/config`: the number of faces in the latest
  faces message (`state_class: measurement`, unit `faces`);
* `homeassistant/binary_sensor/<node>_<camera>_face_present/config`: ON while that number is
  above zero (`device_class: occupancy`).

Both read the camera's faces topic, and take availability from the node's retained
`<prefix>/status`. The status has three values (`online`, `offline` from the Last Will,
`stopped` from a clean shutdown) but an HA availability entry has one not-available payload,
so the entry's `value_template` folds everything but `online` into `offline`.

`default_entity_id` is used rather than `object_id`: HA deprecated `object_id` in 2025.10 and
stopped honouring it in 2026.4.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_facedet import __version__
from edge_facedet.config import PublishPolicy
from edge_facedet.outputs.mqtt.topics import DISCOVERY_PREFIX, Topics, discovery_topic

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edge_facedet.config import CameraConfig

__all__ = [
    "DISCOVERY_PREFIX",
    "DiscoveryMessage",
    "binary_sensor_config",
    "discovery_messages",
    "expire_after_s",
    "sensor_config",
]

# Jinja templates evaluated by Home Assistant against each faces message (faces.schema.json).
FACE_COUNT_TEMPLATE = "{{ value_json.faces | length }}"
FACE_PRESENT_TEMPLATE = "{{ 'ON' if value_json.faces | length > 0 else 'OFF' }}"
AVAILABILITY_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"
# Missing this many heartbeats in a row makes the entities unavailable: one lost message is
# noise, three mean the camera's pipeline stopped while the node still says `online`.
_MISSED_HEARTBEATS = 3
_MIN_EXPIRE_S = 10
_SEPARATORS = (",", ":")


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained discovery config: where it goes and its JSON body."""

    topic: str
    payload: bytes


def _entity_slug(*parts: str) -> str:
    # HA entity ids are lowercase letters, digits and underscores.
    return "_".join(parts).lower().replace("-", "_")


def expire_after_s(camera: CameraConfig) -> int | None:
    """Seconds without a faces message after which HA marks the entities unavailable.

    on_change publishes at least every `heartbeat_s`; every_frame at `detect_fps`. on_faces
    is silent while nobody is there, so silence means nothing and there is no expiry.
    """
    policy = camera.publish.policy
    if policy is PublishPolicy.ON_CHANGE:
        interval = camera.publish.heartbeat_s
    elif policy is PublishPolicy.EVERY_FRAME:
        interval = 1.0 / camera.detect_fps
    else:
        return None
    return max(_MIN_EXPIRE_S, math.ceil(interval * _MISSED_HEARTBEATS))


def _common(
    *,
    node_id: str,
    topic_prefix: str,
    camera: CameraConfig,
    suffix: str,
    component: str,
    title: str,
) -> dict[str, Any]:
    label = camera.name or camera.id
    topics = Topics(topic_prefix)
    unique = f"edge-facedet_{node_id}_{camera.id}_{suffix}"
    body: dict[str, Any] = {
        "name": f"{label} {title}",
        "unique_id": unique,
        "default_entity_id": f"{component}.{_entity_slug(node_id, camera.id, suffix)}",
        "state_topic": topics.camera_faces(camera.id),
        "availability": [
            {
                "topic": topics.status,
                "value_template": AVAILABILITY_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "device": {
            "identifiers": [f"edge-facedet_{node_id}"],
            "name": f"edge-facedet {node_id}",
            "manufacturer": "edge-facedet",
            "model": "face-detection-0204 (OpenVINO)",
            "sw_version": __version__,
        },
    }
    return body


def sensor_config(*, node_id: str, topic_prefix: str, camera: CameraConfig) -> dict[str, Any]:
    """The face-count sensor's discovery config."""
    body = _common(
        node_id=node_id,
        topic_prefix=topic_prefix,
        camera=camera,
        suffix="faces",
        component="sensor",
        title="faces",
    )
    body.update(
        {
            "value_template": FACE_COUNT_TEMPLATE,
            "unit_of_measurement": "faces",
            "state_class": "measurement",
            "icon": "mdi:face-recognition",
        }
    )
    expire = expire_after_s(camera)
    if expire is not None:
        body["expire_after"] = expire
    return body


def binary_sensor_config(
    *, node_id: str, topic_prefix: str, camera: CameraConfig
) -> dict[str, Any]:
    """The face-present binary sensor's discovery config."""
    body = _common(
        node_id=node_id,
        topic_prefix=topic_prefix,
        camera=camera,
        suffix="face_present",
        component="binary_sensor",
        title="face present",
    )
    body.update(
        {
            "value_template": FACE_PRESENT_TEMPLATE,
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "occupancy",
        }
    )
    expire = expire_after_s(camera)
    if expire is not None:
        body["expire_after"] = expire
    else:
        # on_faces never says "0 faces": switch off when the messages stop.
        body["off_delay"] = max(_MIN_EXPIRE_S, math.ceil(_MISSED_HEARTBEATS / camera.detect_fps))
    return body


def discovery_messages(
    *,
    node_id: str,
    topic_prefix: str,
    cameras: Sequence[CameraConfig],
    discovery_prefix: str = DISCOVERY_PREFIX,
) -> list[DiscoveryMessage]:
    """Both discovery configs of every enabled camera, in camera order."""
    messages = []
    for camera in cameras:
        if not camera.enabled:
            continue
        for component, suffix, body in (
            ("sensor", "faces", sensor_config),
            ("binary_sensor", "face_present", binary_sensor_config),
        ):
            config = body(node_id=node_id, topic_prefix=topic_prefix, camera=camera)
            topic = discovery_topic(
                component=component,
                object_id=f"{node_id}_{camera.id}_{suffix}",
                discovery_prefix=discovery_prefix,
            )
            payload = json.dumps(config, separators=_SEPARATORS, sort_keys=True).encode()
            messages.append(DiscoveryMessage(topic=topic, payload=payload))
    return messages
