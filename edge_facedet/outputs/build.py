"""Which outputs a configuration gets, wired: the one place the service's output list is made.

Today that is MQTT, with Home Assistant discovery as its announcer when
`mqtt.home_assistant_discovery` is on, and the web page's output (web.py) when the HTTP
endpoint serves the page (`metrics.enabled` and `metrics.web`). A new output (a webhook, an
events stream) is one more entry here and a module beside `mqtt/`; the service and the
pipeline do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_facedet.outputs.mqtt.homeassistant import discovery_messages
from edge_facedet.outputs.mqtt.output import MqttOutput
from edge_facedet.outputs.mqtt.topics import Topics
from edge_facedet.outputs.web import WebOutput

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig, MqttConfig, ServiceConfig
    from edge_facedet.outputs.base import Output
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.mqtt.homeassistant import DiscoveryMessage
    from edge_facedet.outputs.mqtt.output import Announcer

__all__ = ["OutputContext", "build_mqtt_output", "build_outputs", "build_web_output"]


@dataclass(frozen=True, slots=True)
class OutputContext:
    """What outputs share with the service: its metrics and where secrets come from."""

    metrics: Metrics
    environ: Mapping[str, str] | None = None
    credentials_dir: Path | None = None
    web: WebOutput | None = None
    """The web page's output (`build_web_output`): made before the HTTP endpoint starts,
    which serves from it, so it is handed in rather than made here."""


def build_outputs(config: ServiceConfig, *, context: OutputContext) -> list[Output]:
    """The outputs `config` asks for, in the order they are started and closed."""
    mqtt = build_mqtt_output(config=config.mqtt, node_id=config.node_id, context=context)
    return [mqtt] if context.web is None else [mqtt, context.web]


def build_web_output(config: ServiceConfig, *, cameras: Sequence[CameraConfig]) -> WebOutput | None:
    """The web page's output for the enabled `cameras`, or None when no page is served."""
    if not (config.metrics.enabled and config.metrics.web):
        return None
    return WebOutput(node_id=config.node_id, cameras=cameras)


def build_mqtt_output(*, config: MqttConfig, node_id: str, context: OutputContext) -> MqttOutput:
    """The MQTT output, announcing cameras to Home Assistant if the config says so."""
    announcer: Announcer | None = None
    if config.home_assistant_discovery:
        prefix = Topics.for_node(node_id=node_id, prefix=config.topic_prefix).prefix

        def announcer(*, cameras: Sequence[CameraConfig]) -> Sequence[DiscoveryMessage]:
            return discovery_messages(node_id=node_id, topic_prefix=prefix, cameras=cameras)

    return MqttOutput(
        config=config,
        node_id=node_id,
        metrics=context.metrics,
        environ=context.environ,
        credentials_dir=context.credentials_dir,
        announcer=announcer,
    )
