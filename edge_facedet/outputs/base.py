"""The output seam: what the service and the result pipeline need from every output.

An output receives the pipeline's messages (a faces message per published frame, the latest
state per camera, a track's events, all as the JSON bytes payloads.py and events.py build, and
the latest snapshot JPEG per camera where the camera's snapshots are on) and has a lifetime
the service drives. `build.build_outputs` turns the configuration into a list of outputs; the
service runs each one as a task of its TaskGroup, and the pipeline hands every message to all.

    class PrintOutput:
        name = "print"

        def announce(self, *, cameras): ...
        def publish_faces(self, *, camera_id, payload): print(camera_id, payload)
        def set_camera_state(self, *, camera_id, payload): print(camera_id, payload)
        def publish_event(self, *, camera_id, payload): print(camera_id, payload)
        def set_snapshot(self, *, camera_id, jpeg): print(camera_id, len(jpeg))
        async def wait_ready(self, timeout): return True
        async def run(self): await self._closed.wait()
        async def close(self): self._closed.set()

`mqtt.output.MqttOutput` is the production output; `memory.MemoryOutput` keeps what it gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edge_facedet.config import CameraConfig

__all__ = ["Output", "ResultSink"]


class ResultSink(Protocol):
    """The half of an output the result pipeline calls, on the event loop, per message.

    Both must return at once and never block: they run between two detector batches.
    """

    def publish_faces(self, *, camera_id: str, payload: bytes) -> None:
        """One faces message (faces.schema.json) for `camera_id`."""

    def set_camera_state(self, *, camera_id: str, payload: bytes) -> None:
        """The latest state (camera_state.schema.json) of `camera_id`; replaces the last."""

    def publish_event(self, *, camera_id: str, payload: bytes) -> None:
        """One track event (event.schema.json) for `camera_id`, in order with the faces."""

    def set_snapshot(self, *, camera_id: str, jpeg: bytes) -> None:
        """The latest snapshot (a JPEG) of `camera_id`; replaces the last."""


class Output(ResultSink, Protocol):
    """One destination of the service's messages, with its lifetime.

    The service calls `announce` once before `run`, starts `run()` as a task, waits up to a
    few seconds for `wait_ready` before it starts the cameras (so the first frames need not
    queue), and at a stop calls `close()`, after which `run()` must return.
    """

    @property
    def name(self) -> str:
        """Short and unique among the outputs: it names the output's task."""

    def announce(self, *, cameras: Sequence[CameraConfig]) -> None:
        """The enabled cameras, before `run()` (e.g. Home Assistant discovery)."""

    async def wait_ready(self, timeout: float) -> bool:
        """Whether the output is (or within `timeout` seconds becomes) able to deliver."""

    async def run(self) -> None:
        """The output's task, until `close()`; raises nothing but `CancelledError`."""

    async def close(self) -> None:
        """Deliver what can be delivered in about a second and make `run()` return."""
