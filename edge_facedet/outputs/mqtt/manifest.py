"""The cameras an MQTT output announced, and the retained topics of those that went away.

Cameras that go away leave nothing retained: `CameraManifest.forget` (a reload removed the
camera) replaces its state, snapshot and discovery topics with empty retained messages, and
the retained manifest `<prefix>/cameras` lists the cameras announced, so on its first
connect an output reads the manifest an earlier run left (`reconcile`) and clears the
cameras no longer configured before it says `online`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Protocol

from edge_facedet.config.base import MAX_ID_LENGTH
from edge_facedet.config.service import MAX_CAMERAS
from edge_facedet.outputs.mqtt.homeassistant import discovery_topics
from edge_facedet.outputs.mqtt.topics import Topics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edge_facedet.config import CameraConfig
    from edge_facedet.outputs.mqtt.outbox import LatestByKey
    from edge_facedet.outputs.mqtt.session import Link

__all__ = ["MAX_MANIFEST_BYTES", "CameraManifest"]

log = logging.getLogger(__name__)

# How long the first connect waits for the retained manifest an earlier run left. A broker
# sends retained messages right after its SUBACK, so this is only waited out when there is
# none (the node's first run ever, or a broker that lost its store).
MANIFEST_WAIT_S = 1.0
# The largest manifest: every camera a file may list, each id as long as allowed, as the
# JSON list `_set_manifest` writes (two quotes and a comma or bracket per id, one bracket).
MAX_MANIFEST_BYTES = MAX_CAMERAS * (MAX_ID_LENGTH + 3) + 1


class SetRetained(Protocol):
    """Keep `payload` retained on `topic` (the output's `set_retained`)."""

    def __call__(self, *, topic: str, payload: bytes, qos: int) -> None: ...


class CameraManifest:
    """The manifest's cameras, and the empty retained messages that clear a camera's topics.

    Writes through `set_retained`; `retained` is the same store, read to void a clearing.
    """

    def __init__(
        self,
        *,
        topics: Topics,
        node_id: str,
        qos: int,
        discovery: bool,
        retained: LatestByKey,
        set_retained: SetRetained,
    ) -> None:
        self._topics = topics
        self._node_id = node_id
        self._qos = qos
        # Whether cameras have Home Assistant discovery topics to clear.
        self._discovery = discovery
        self._retained = retained
        self._set_retained = set_retained
        # The cameras announced, in order: the manifest's content.
        self._announced: dict[str, None] = {}
        self._reconciled = False

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._announced)

    def announce(self, cameras: Sequence[CameraConfig]) -> None:
        """Add `cameras` to the manifest; a camera with snapshots off gets an empty retained
        snapshot, so a picture an earlier configuration left retained is deleted."""
        for camera in cameras:
            self._announced[camera.id] = None
            # A camera removed earlier in this run and now back: its clearing is void.
            self._retained.discard(self._topics.camera_state(camera.id))
            self._retained.discard(self._topics.camera_snapshot(camera.id))
            if not camera.snapshots.enabled:
                self._clear(self._topics.camera_snapshot(camera.id))
        self._set_manifest()

    def forget(self, camera_id: str) -> None:
        """Drop the camera from the manifest and clear its retained topics."""
        self._announced.pop(camera_id, None)
        self._clear_camera(camera_id)
        self._set_manifest()

    def take_over(self, old: CameraManifest) -> None:
        """The cameras `old` announced (a reload replaced its output)."""
        self._announced = dict(old._announced)

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
            self._clear_camera(camera_id)
        if stale:
            log.info("MQTT: cleared the retained topics of removed camera(s) %s", ", ".join(stale))

    def _clear_camera(self, camera_id: str) -> None:
        """Empty retained messages on every retained topic the camera may have."""
        topics = [self._topics.camera_state(camera_id), self._topics.camera_snapshot(camera_id)]
        if self._discovery:
            topics += discovery_topics(node_id=self._node_id, camera_id=camera_id)
        for topic in topics:
            self._clear(topic)

    def _clear(self, topic: str) -> None:
        self._set_retained(topic=topic, payload=b"", qos=self._qos)

    def _set_manifest(self) -> None:
        payload = json.dumps(list(self._announced), separators=(",", ":")).encode()
        self._set_retained(topic=self._topics.manifest, payload=payload, qos=self._qos)


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
