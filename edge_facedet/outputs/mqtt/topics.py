"""Every MQTT topic the service publishes to, named in one place.

A node's topics live under one prefix (`mqtt.topic_prefix`, by default
`edge-facedet/<node_id>`):

* `<prefix>/status` (retained): `online`, `offline` (the Last Will) or `stopped`;
* `<prefix>/shard` (retained, only when sharded): the shard's index, count, cameras and cost;
* `<prefix>/config` (retained): the configuration file loaded last (time, sha256, result of
  the last start or reload, its problems, what applies at the next start);
* `<prefix>/cameras` (retained): the manifest, a JSON list of the camera ids announced, so a
  later start can clear the retained topics of cameras no longer configured;
* `<prefix>/cameras/<id>/state` (retained): the camera's latest state;
* `<prefix>/cameras/<id>/faces`: one message per published frame;
* `<prefix>/cameras/<id>/events`: a face track's `new`, `update` and `end` (not retained);
* `<prefix>/cameras/<id>/snapshot` (retained): the latest track's best face as a JPEG, only
  for cameras whose snapshots are on.

Home Assistant discovery configs go to `homeassistant/<component>/<object id>/config`
(homeassistant.py builds their bodies). The connection, the output and the discovery all
ask this module, so a topic is spelled once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DISCOVERY_PREFIX",
    "Topics",
    "check_topic",
    "default_prefix",
    "discovery_topic",
]

DISCOVERY_PREFIX = "homeassistant"
# Characters a topic level built from our names may not hold: level separator, wildcards, NUL.
_LEVEL_FORBIDDEN = "/#+\0"


def default_prefix(node_id: str) -> str:
    """The topic prefix when `mqtt.topic_prefix` is not set."""
    return f"edge-facedet/{node_id}"


def check_topic(topic: str) -> str:
    """`topic` if it can be published to: no wildcard, no NUL, not a `$` system topic."""
    if not topic or any(ch in topic for ch in "#+\0") or topic.startswith("$"):
        raise ValueError(f"invalid topic {topic!r}")
    return topic


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics under one node's prefix."""

    prefix: str

    @classmethod
    def for_node(cls, *, node_id: str, prefix: str | None = None) -> Topics:
        return cls(prefix or default_prefix(node_id))

    def under(self, *parts: str) -> str:
        """`<prefix>/<part>/<part>...`; parts must not contain wildcards or slashes."""
        for part in parts:
            if not part or any(ch in part for ch in _LEVEL_FORBIDDEN):
                raise ValueError(f"invalid topic level {part!r}")
        return "/".join((self.prefix, *parts))

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def shard(self) -> str:
        return f"{self.prefix}/shard"

    @property
    def config(self) -> str:
        return f"{self.prefix}/config"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}/cameras"

    def reprefixed(self, topic: str, *, old: Topics) -> str:
        """`topic` moved from `old`'s prefix to this one (unchanged if not under `old`)."""
        if topic.startswith(old.prefix + "/"):
            return self.prefix + topic[len(old.prefix) :]
        return topic

    def camera_state(self, camera_id: str) -> str:
        return self.under("cameras", camera_id, "state")

    def camera_faces(self, camera_id: str) -> str:
        return self.under("cameras", camera_id, "faces")

    def camera_events(self, camera_id: str) -> str:
        return self.under("cameras", camera_id, "events")

    def camera_snapshot(self, camera_id: str) -> str:
        return self.under("cameras", camera_id, "snapshot")


def discovery_topic(
    *, component: str, object_id: str, discovery_prefix: str = DISCOVERY_PREFIX
) -> str:
    """Where Home Assistant reads one entity's discovery config."""
    return f"{discovery_prefix}/{component}/{object_id}/config"
