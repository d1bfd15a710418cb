"""The web page's output: what the pipeline publishes, kept (bounded) for the HTTP thread.

`WebOutput` is an `Output` like MQTT's (base.py), registered by build.py: it receives every
camera state, track event and snapshot on the event loop and keeps the latest state per
camera, the last `EVENTS_KEPT` events across cameras, and the snapshots of those events in
memory, at most `SNAPSHOT_BYTES` together (the oldest go first). Nothing is parsed or encoded
on the loop: payloads are kept as the JSON bytes they arrive as, and read by the API routes
(webroutes.py) in the HTTP thread. It also owns `latest`, each camera's latest processed
frame (latest.py), which the pipeline writes.

Images follow the camera's `snapshots.mode`, the one per-camera image switch. A crop camera
publishes faces, not scenes, so its tile is its latest snapshot (a face crop) and never the
frame: the frame would show the place and every bystander, which the operator chose not to
publish for that camera. Blurring the frame instead would still show the scene.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_facedet.config.snapshots import SnapshotMode
from edge_facedet.outputs.latest import LatestFrames

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edge_facedet.config import CameraConfig
    from edge_facedet.outputs.snapshots.worker import SnapshotResult

__all__ = ["EVENTS_KEPT", "SNAPSHOT_BYTES", "KeptEvent", "WebOutput"]

EVENTS_KEPT = 100
SNAPSHOT_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class KeptEvent:
    camera_id: str
    payload: bytes
    """The event message as published (event.schema.json)."""


class WebOutput:
    """The Output the web page reads from; every method here is quick and never blocks."""

    name = "web"

    def __init__(
        self,
        *,
        node_id: str,
        cameras: Sequence[CameraConfig],
        events_kept: int = EVENTS_KEPT,
        snapshot_bytes: int = SNAPSHOT_BYTES,
    ) -> None:
        self.node_id = node_id
        self.cameras = {camera.id: camera for camera in cameras}
        self.latest = LatestFrames(camera_ids=self.cameras)
        self._states: dict[str, bytes] = {}
        self._events: deque[KeptEvent] = deque(maxlen=events_kept)
        self._snapshots: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._snapshot_bytes = 0
        self._snapshot_limit = snapshot_bytes
        self._camera_snapshots: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._closed = asyncio.Event()

    def images(self, camera_id: str) -> SnapshotMode:
        """The camera's image mode (its snapshots.mode): off means metadata only, and so
        does a camera this output does not know (added by a reload after the page's routes
        were made): no picture of it is kept or served."""
        camera = self.cameras.get(camera_id)
        return SnapshotMode.OFF if camera is None else camera.snapshots.mode

    # -- Output, on the event loop ------------------------------------------------------------

    def announce(self, *, cameras: Sequence[CameraConfig]) -> None:
        """The cameras, at the start and again for those a reload adds or restarts (their
        tiles appear; a changed snapshots mode applies at once)."""
        with self._lock:
            self.cameras.update({camera.id: camera for camera in cameras})
        for camera in cameras:
            self.latest.add(camera.id)

    def forget_camera(self, camera_id: str) -> None:
        """A reload removed the camera: no tile, no kept picture or snapshot of it."""
        with self._lock:
            self.cameras.pop(camera_id, None)
            self._states.pop(camera_id, None)
            self._camera_snapshots.pop(camera_id, None)
        self.latest.remove(camera_id)

    def publish_faces(self, *, camera_id: str, payload: bytes) -> None:
        """Faces come from `latest` instead (every processed frame, whatever the policy)."""

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        with self._lock:
            self._states[camera_id] = payload

    def publish_event(self, *, camera_id: str, payload: bytes) -> None:
        with self._lock:
            self._events.append(KeptEvent(camera_id=camera_id, payload=payload))

    def set_snapshot(self, *, camera_id: str, jpeg: bytes) -> None:
        """The camera's latest snapshot: a crop camera's tile."""
        if self.images(camera_id) is SnapshotMode.OFF:
            return  # never sent for such a camera; refused all the same
        with self._lock:
            self._camera_snapshots[camera_id] = jpeg

    def snapshot_ready(self, result: SnapshotResult) -> None:
        """A snapshot job's result (the service hands every one over): kept by event id, so
        the page shows each event with its own picture."""
        job = result.job
        if result.jpeg is None or self.images(job.camera_id) is SnapshotMode.OFF:
            return
        if len(result.jpeg) > self._snapshot_limit:
            return
        with self._lock:
            old = self._snapshots.pop(job.event_id, None)
            if old is not None:
                self._snapshot_bytes -= len(old[1])
            self._snapshots[job.event_id] = (job.camera_id, result.jpeg)
            self._snapshot_bytes += len(result.jpeg)
            while self._snapshot_bytes > self._snapshot_limit or len(self._snapshots) > (
                self._events.maxlen or EVENTS_KEPT
            ):
                _, (_, dropped) = self._snapshots.popitem(last=False)
                self._snapshot_bytes -= len(dropped)

    async def wait_ready(self, timeout: float) -> bool:
        return True

    async def run(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()

    # -- reads, from the HTTP thread -----------------------------------------------------------

    def state(self, camera_id: str) -> bytes | None:
        """The camera's latest state message (camera_state.schema.json), if any yet."""
        with self._lock:
            return self._states.get(camera_id)

    def events(self) -> list[KeptEvent]:
        """The kept events, oldest first."""
        with self._lock:
            return list(self._events)

    def event_snapshot(self, event_id: str) -> bytes | None:
        with self._lock:
            kept = self._snapshots.get(event_id)
        return None if kept is None else kept[1]

    def camera_snapshot(self, camera_id: str) -> bytes | None:
        with self._lock:
            return self._camera_snapshots.get(camera_id)

    @property
    def snapshot_bytes(self) -> int:
        return self._snapshot_bytes
