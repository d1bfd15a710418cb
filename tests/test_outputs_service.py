"""The output list in a real service run: the model, a file camera and the real broker.

The service runs in this process (not through the CLI) so a `MemoryOutput` can be added to
its output list next to the configured MQTT output; neither the pipeline nor the service
knows it is there. What it records is compared with what a broker subscriber receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from edge_facedet.config import load_config
from edge_facedet.outputs.memory import MemoryOutput
from edge_facedet.service import Service
from tests.support.broker import mqtt_subscriber
from tests.support.paths import FACE_VIDEO
from tests.support.service import service_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from edge_facedet.config import ServiceConfig
    from tests.support.broker import BrokerAddress

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


def load(directory: Path, settings: dict[str, Any]) -> ServiceConfig:
    """The config as the CLI gets it: written as YAML, read by `load_config`."""
    path = directory / f"config-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return load_config(path, environ={})


class Running:
    """A `Service.run()` task; `stop()` asks it to stop as SIGTERM does."""

    def __init__(self, service: Service, task: asyncio.Task[int]) -> None:
        self.service = service
        self.task = task

    async def stop(self) -> int:
        self.service.request_stop()
        return await asyncio.wait_for(self.task, STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def running(config: ServiceConfig, memory: MemoryOutput) -> AsyncIterator[Running]:
    # No NOTIFY_SOCKET or CREDENTIALS_DIRECTORY from the test's environment.
    service = Service(config=config, environ={}, extra_outputs=[memory])
    task = asyncio.create_task(service.run(), name="service-under-test")
    ready = asyncio.create_task(service.ready.wait())
    try:
        await asyncio.wait((task, ready), timeout=READY_TIMEOUT_S, return_when="FIRST_COMPLETED")
        if task.done():
            raise AssertionError(f"service exited before READY: {task.result()}")
        assert ready.done(), f"service not ready within {READY_TIMEOUT_S} s"
        yield Running(service, task)
    finally:
        ready.cancel()
        if not task.done():
            service.request_stop()
            await asyncio.wait((task,), timeout=STOP_TIMEOUT_S)


def file_camera_config(
    tmp_path: Path, *, model_root: Path, model_cache: Path, mqtt_port: int, node: str
) -> ServiceConfig:
    settings = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_port,
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    return load(tmp_path, settings)


async def test_a_second_output_gets_what_the_mqtt_subscriber_gets(
    tmp_path: Path, model_root: Path, model_cache: Path, mqtt_broker: BrokerAddress
) -> None:
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    config = file_camera_config(
        tmp_path,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=node,
    )
    memory = MemoryOutput()
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        async with running(config, memory) as run:
            assert memory.announced == ["event"]
            await memory.wait_for(lambda m: len(m.faces("event")) >= 5, timeout=30)
            assert await run.stop() == 0
        # `stopped` follows the flush of the outbox: everything sent is in by then.
        status = f"{prefix}/status"
        await sub.wait_for(
            lambda messages: any(m.topic == status and m.payload == b"stopped" for m in messages),
            timeout=10,
        )
    assert memory.ran and memory.closed
    mqtt_faces = [m.payload for m in sub.on(f"{prefix}/cameras/event/faces")]
    assert len(mqtt_faces) >= 5
    assert mqtt_faces == memory.faces("event")
    # The MQTT state is retained, latest only: a state replaced before it went out is not
    # sent, so the subscriber sees a subset of the memory's states, ending with the same one.
    mqtt_states = [m.payload for m in sub.on(f"{prefix}/cameras/event/state")]
    memory_states = memory.states("event")
    assert mqtt_states, "no state reached the subscriber"
    assert set(mqtt_states) <= set(memory_states)
    assert mqtt_states[-1] == memory_states[-1]


async def test_two_runs_never_share_an_event_id(
    tmp_path: Path, model_root: Path, model_cache: Path, mqtt_broker: BrokerAddress
) -> None:
    config = file_camera_config(
        tmp_path,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=f"test-{uuid.uuid4().hex[:10]}",
    )
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for _ in range(2):
        memory = MemoryOutput()
        async with running(config, memory) as run:
            await memory.wait_for(lambda m: len(m.faces()) >= 3, timeout=30)
            assert await run.stop() == 0
        runs.append((run.service.run_id, [json.loads(p) for p in memory.faces()]))
    (first_run, first), (second_run, second) = runs
    assert first_run != second_run
    # Each reader counts seq from 0 again, so only the run id tells the two runs apart.
    assert {0, 1, 2} <= {p["seq"] for p in first} & {p["seq"] for p in second}
    first_ids = {p["event_id"] for p in first}
    second_ids = {p["event_id"] for p in second}
    assert len(first_ids) == len(first) and len(second_ids) == len(second)
    assert first_ids.isdisjoint(second_ids)
    assert all(f"-{first_run}-" in event_id for event_id in first_ids)
    assert all(f"-{second_run}-" in event_id for event_id in second_ids)
