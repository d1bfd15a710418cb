"""The outputs the pipeline fans out to: built, run as named tasks, swapped at a reload."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from edge_facedet.outputs.build import build_mqtt_output, build_outputs
from edge_facedet.outputs.mqtt.output import MqttOutput
from edge_facedet.outputs.mqtt.topics import Topics

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from edge_facedet.config import CameraConfig, ServiceConfig
    from edge_facedet.outputs.base import Output
    from edge_facedet.outputs.build import OutputContext
    from edge_facedet.outputs.pipeline import ResultPipeline
    from edge_facedet.sharding import ShardPlan

__all__ = ["FIRST_CONNECT_WAIT_S", "OutputSet", "Spawn"]

log = logging.getLogger(__name__)

# How long to wait for the outputs (the first broker connection) before declaring READY
# anyway: the service must detect with the broker down, so this only avoids a needless
# first backlog.
FIRST_CONNECT_WAIT_S = 3.0


class Spawn(Protocol):
    """Starts `work` as a named task of the service's one TaskGroup."""

    def __call__(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]: ...


class OutputSet:
    """outputs/build.py's list for the config, then the `extra` outputs (the tests'
    `MemoryOutput`), in the order they are started and closed."""

    def __init__(self, *, extra: Sequence[Output]) -> None:
        self._extra = tuple(extra)
        self.outputs: list[Output] = []
        self._context: OutputContext | None = None
        self._spawn: Spawn | None = None

    def build(
        self, config: ServiceConfig, *, context: OutputContext, cameras: Sequence[CameraConfig]
    ) -> list[Output]:
        self._context = context
        self.outputs = [*build_outputs(config, context=context), *self._extra]
        for output in self.outputs:
            # Before the first connect, so MQTT's already carries the Home Assistant discovery.
            output.announce(cameras=cameras)
        return self.outputs

    async def start(self, spawn: Spawn) -> None:
        """Run every output as a task of the group; return once all are ready, or after
        FIRST_CONNECT_WAIT_S."""
        self._spawn = spawn
        for output in self.outputs:
            spawn(output.run(), name=f"output-{output.name}")
        await asyncio.gather(*(output.wait_ready(FIRST_CONNECT_WAIT_S) for output in self.outputs))

    async def close(self) -> None:
        for output in self.outputs:
            await output.close()

    def retain_shard(self, plan: ShardPlan, *, qos: int) -> None:
        """The node's retained messages besides the cameras' (the shard's assignment)."""
        for output in self.outputs:
            if isinstance(output, MqttOutput):
                output.set_retained(
                    topic=Topics(output.topic_prefix).shard, payload=plan.payload(), qos=qos
                )

    def retain_config_report(self, payload: bytes, *, qos: int) -> None:
        """Retain `payload` (a ReloadReport's) as each MQTT output's `<prefix>/config`."""
        for output in self.outputs:
            if isinstance(output, MqttOutput):
                output.set_retained(
                    topic=Topics(output.topic_prefix).config, payload=payload, qos=qos
                )

    async def replace_mqtt(
        self,
        config: ServiceConfig,
        *,
        cameras: Sequence[CameraConfig],
        pipeline: ResultPipeline | None,
    ) -> None:
        """Close the MQTT output and start one with the new settings that takes over what
        the old one had not sent (its outbox, latest states and snapshots)."""
        old = next((o for o in self.outputs if isinstance(o, MqttOutput)), None)
        if old is None or self._spawn is None or self._context is None:
            return
        # Closed first: the new one may use the same client id, which the broker would let
        # take over the old connection mid-publish.
        await old.close()
        new = build_mqtt_output(config=config.mqtt, node_id=config.node_id, context=self._context)
        new.take_over(old)
        new.announce(cameras=cameras)
        self.outputs = [new if output is old else output for output in self.outputs]
        if pipeline is not None:
            pipeline.replace_output(old, new)
        self._spawn(new.run(), name=f"output-{new.name}")
        log.info("MQTT: reconnecting with the reloaded settings")
