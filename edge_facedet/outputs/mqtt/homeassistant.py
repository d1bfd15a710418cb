"""Home Assistant MQTT discovery: the retained config messages that make cameras HA entities.

Owns the discovery wire format, built here with no I/O (the MQTT output sends the result,
retained, on every connect before `online`; topics.py names every topic used). Per camera,
on one device per node, `homeassistant/<component>/<node>_<camera>_<suffix>/config` for:

* `sensor` `faces`: the number of faces in the latest faces message (`state_class:
  measurement`, unit `faces`); not for a camera whose publish policy is `off`;
* `binary_sensor` `face_present` (`device_class: occupancy`): with tracking, ON while the
  retained camera state's `open_tracks` is above zero (a track outlives a frame or two
  without a detection, so this does not flicker); without, ON while the latest faces
  message has faces;
* `event` `events`, with tracking: fires `new` and `end` from the events topic (an `update`
  fires nothing, see `EVENT_TEMPLATE`);
* `image` `snapshot`, only where the camera's snapshots are on: the retained snapshot JPEG.

All take availability from the node's retained `<prefix>/status`. The status has three
values (`online`, `offline` from the Last Will, `stopped` from a clean shutdown) but an HA
availability entry has one not-available payload, so the entry's `value_template` folds
everything but `online` into `offline`.

`default_entity_id` is used rather than `object_id`: HA deprecated `object_id` in 2025.10 and
stopped honouring it in 2026.4.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
    "discovery_topics",
    "event_config",
    "expire_after_s",
    "image_config",
    "sensor_config",
]

# Jinja templates evaluated by Home Assistant against each faces message (faces.schema.json).
FACE_COUNT_TEMPLATE = "{{ value_json.faces | length }}"
FACE_PRESENT_TEMPLATE = "{{ 'ON' if value_json.faces | length > 0 else 'OFF' }}"
# ... against each camera state (camera_state.schema.json), for cameras with tracking.
FACE_PRESENT_TRACKS_TEMPLATE = "{{ 'ON' if value_json.open_tracks > 0 else 'OFF' }}"
AVAILABILITY_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"
# The event types the event entity fires: a track's start and end. HA's MQTT event entity
# needs `{"event_type": ...}` JSON; every other key of it becomes an attribute of the event.
EVENT_TYPES = ("new", "end")
# ... against each event message (event.schema.json). An `update` renders to the empty
# string, which HA ignores (logged at debug); an event type missing from `event_types` would
# instead log a warning per message, and updates can come every few seconds per track.
EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.type, 'event_id': value_json.event_id, "
    "'end_reason': value_json.end_reason, 'duration_s': value_json.duration_s, "
    "'snapshot': value_json.snapshot} | tojson "
    "if value_json.type in ['new', 'end'] else '' }}"
)
SNAPSHOT_CONTENT_TYPE = "image/jpeg"
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
    is silent while nobody is there, so silence means nothing and there is no expiry; off
    publishes no faces messages at all.
    """
    policy = camera.publish.policy
    if policy is PublishPolicy.ON_CHANGE:
        interval = camera.publish.heartbeat_s
    elif policy is PublishPolicy.EVERY_FRAME:
        interval = 1.0 / camera.detect_fps
    else:  # ON_FACES, OFF
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
    """What every entity's config has: names, ids, availability and the device."""
    label = camera.name or camera.id
    topics = Topics(topic_prefix)
    unique = f"edge-facedet_{node_id}_{camera.id}_{suffix}"
    body: dict[str, Any] = {
        "name": f"{label} {title}",
        "unique_id": unique,
        "default_entity_id": f"{component}.{_entity_slug(node_id, camera.id, suffix)}",
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
            "state_topic": Topics(topic_prefix).camera_faces(camera.id),
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
    """The face-present binary sensor's discovery config.

    With tracking it reads the retained camera state's `open_tracks`: no expiry or off delay
    (the state is retained and says 0 itself; a dead node is the availability's job).
    """
    body = _common(
        node_id=node_id,
        topic_prefix=topic_prefix,
        camera=camera,
        suffix="face_present",
        component="binary_sensor",
        title="face present",
    )
    body.update({"payload_on": "ON", "payload_off": "OFF", "device_class": "occupancy"})
    topics = Topics(topic_prefix)
    if camera.tracking.enabled:
        body["state_topic"] = topics.camera_state(camera.id)
        body["value_template"] = FACE_PRESENT_TRACKS_TEMPLATE
        return body
    body["state_topic"] = topics.camera_faces(camera.id)
    body["value_template"] = FACE_PRESENT_TEMPLATE
    expire = expire_after_s(camera)
    if expire is not None:
        body["expire_after"] = expire
    else:
        # on_faces never says "0 faces": switch off when the messages stop.
        body["off_delay"] = max(_MIN_EXPIRE_S, math.ceil(_MISSED_HEARTBEATS / camera.detect_fps))
    return body


def event_config(*, node_id: str, topic_prefix: str, camera: CameraConfig) -> dict[str, Any]:
    """The track-event entity's discovery config: `new` and `end` from the events topic."""
    body = _common(
        node_id=node_id,
        topic_prefix=topic_prefix,
        camera=camera,
        suffix="events",
        component="event",
        title="face tracks",
    )
    body.update(
        {
            "state_topic": Topics(topic_prefix).camera_events(camera.id),
            "event_types": list(EVENT_TYPES),
            "value_template": EVENT_TEMPLATE,
            "icon": "mdi:face-recognition",
        }
    )
    return body


def image_config(*, node_id: str, topic_prefix: str, camera: CameraConfig) -> dict[str, Any]:
    """The snapshot image entity's discovery config: the retained JPEG, raw bytes."""
    body = _common(
        node_id=node_id,
        topic_prefix=topic_prefix,
        camera=camera,
        suffix="snapshot",
        component="image",
        title="snapshot",
    )
    body.update(
        {
            "image_topic": Topics(topic_prefix).camera_snapshot(camera.id),
            "content_type": SNAPSHOT_CONTENT_TYPE,
        }
    )
    return body


class _ConfigBuilder(Protocol):
    def __call__(
        self, *, node_id: str, topic_prefix: str, camera: CameraConfig
    ) -> dict[str, Any]: ...


_ENTITY_KINDS = (
    ("sensor", "faces"),
    ("binary_sensor", "face_present"),
    ("event", "events"),
    ("image", "snapshot"),
)
"""(component, suffix) of every entity `_entities` may give a camera."""


def _entities(camera: CameraConfig) -> list[tuple[str, str, _ConfigBuilder | None]]:
    """(component, suffix, builder) of each entity a camera may have; see the module
    docstring. The builder is None for an entity `camera` does not get (now): its discovery
    topic gets an empty retained config, which removes the entity an earlier configuration
    announced (images turned off must take the image entity with them)."""
    return [
        (
            "sensor",
            "faces",
            sensor_config if camera.publish.policy is not PublishPolicy.OFF else None,
        ),
        # The config refuses policy off without tracking, so face_present always has a source.
        ("binary_sensor", "face_present", binary_sensor_config),
        ("event", "events", event_config if camera.tracking.enabled else None),
        ("image", "snapshot", image_config if camera.snapshots.enabled else None),
    ]


def discovery_topics(
    *, node_id: str, camera_id: str, discovery_prefix: str = DISCOVERY_PREFIX
) -> list[str]:
    """Every discovery topic a camera may have announced, whatever its settings were: what
    is cleared when the camera is removed (its config may be gone by then)."""
    return [
        discovery_topic(
            component=component,
            object_id=f"{node_id}_{camera_id}_{suffix}",
            discovery_prefix=discovery_prefix,
        )
        for component, suffix in _ENTITY_KINDS
    ]


def discovery_messages(
    *,
    node_id: str,
    topic_prefix: str,
    cameras: Sequence[CameraConfig],
    discovery_prefix: str = DISCOVERY_PREFIX,
) -> list[DiscoveryMessage]:
    """The discovery configs of every enabled camera, in camera order."""
    messages = []
    for camera in cameras:
        if not camera.enabled:
            continue
        for component, suffix, body in _entities(camera):
            topic = discovery_topic(
                component=component,
                object_id=f"{node_id}_{camera.id}_{suffix}",
                discovery_prefix=discovery_prefix,
            )
            payload = b""
            if body is not None:
                config = body(node_id=node_id, topic_prefix=topic_prefix, camera=camera)
                payload = json.dumps(config, separators=_SEPARATORS, sort_keys=True).encode()
            messages.append(DiscoveryMessage(topic=topic, payload=payload))
    return messages
