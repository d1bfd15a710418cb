"""An output that keeps what it receives, in memory, in order.

A first-class `Output` (as httpx's MockTransport is a transport): the tests register it next
to MQTT to watch a running service without a broker, and anything embedding the service can
read the messages in-process. It is never built from the configuration. Unbounded by
design: it is for runs of seconds, not for production.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edge_facedet.config import CameraConfig

__all__ = ["MemoryOutput", "Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One message the output received."""

    kind: Literal["faces", "state", "event", "snapshot"]
    camera_id: str
    payload: bytes
    """The message's JSON, or for a snapshot the JPEG."""


class MemoryOutput:
    """Records every message it is handed (faces, states, events, snapshots), in order."""

    def __init__(self, *, name: str = "memory") -> None:
        self.name = name
        self.announced: list[str] = []
        self.records: list[Record] = []
        self.ran = False
        self.closed = False
        self._closed = asyncio.Event()
        self._changed = asyncio.Event()

    def faces(self, camera_id: str | None = None) -> list[bytes]:
        """The faces payloads received, oldest first (of one camera, if given)."""
        return self._payloads("faces", camera_id)

    def states(self, camera_id: str | None = None) -> list[bytes]:
        """Every camera state received, oldest first (of one camera, if given)."""
        return self._payloads("state", camera_id)

    def events(self, camera_id: str | None = None) -> list[bytes]:
        """The track event payloads received, oldest first (of one camera, if given)."""
        return self._payloads("event", camera_id)

    def snapshots(self, camera_id: str | None = None) -> list[bytes]:
        """Every snapshot JPEG received, oldest first (of one camera, if given)."""
        return self._payloads("snapshot", camera_id)

    async def wait_for(self, condition: Callable[[MemoryOutput], bool], *, timeout: float) -> None:
        """Return once `condition(self)` holds; TimeoutError after `timeout` seconds."""
        await asyncio.wait_for(self._until(condition), timeout)

    async def _until(self, condition: Callable[[MemoryOutput], bool]) -> None:
        while not condition(self):
            # Cleared only after the check; messages arrive on this loop, so none is missed
            # between the two.
            self._changed.clear()
            await self._changed.wait()

    # -- the Output protocol ----------------------------------------------------------------

    def announce(self, *, cameras: Sequence[CameraConfig]) -> None:
        self.announced.extend(camera.id for camera in cameras)

    def publish_faces(self, *, camera_id: str, payload: bytes) -> None:
        self._record(Record("faces", camera_id, payload))

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        self._record(Record("state", camera_id, payload))

    def publish_event(self, *, camera_id: str, payload: bytes) -> None:
        self._record(Record("event", camera_id, payload))

    def set_snapshot(self, *, camera_id: str, jpeg: bytes) -> None:
        self._record(Record("snapshot", camera_id, jpeg))

    async def wait_ready(self, timeout: float) -> bool:
        return True  # nothing to connect to

    async def run(self) -> None:
        self.ran = True
        await self._closed.wait()

    async def close(self) -> None:
        self.closed = True
        self._closed.set()

    def _record(self, record: Record) -> None:
        self.records.append(record)
        self._changed.set()

    def _payloads(self, kind: str, camera_id: str | None) -> list[bytes]:
        return [
            r.payload
            for r in self.records
            if r.kind == kind and (camera_id is None or r.camera_id == camera_id)
        ]
