"""The whole configuration file (`ServiceConfig`): node id, sections, `defaults` and cameras."""

from __future__ import annotations

import re
import socket
from typing import Annotated, Any, Final

from pydantic import Field, ValidationError, field_validator, model_validator

from edge_facedet.config.base import ID_PATTERN, MAX_ID_LENGTH, StrictModel, check_host
from edge_facedet.config.camera import CameraConfig, CameraSettings
from edge_facedet.config.httpauth import HttpAuthConfig
from edge_facedet.config.model import ModelConfig
from edge_facedet.config.mqtt import MqttConfig
from edge_facedet.config.shard import ShardConfig
from edge_facedet.config.snapshots import SnapshotDirConfig


class MetricsConfig(StrictModel):
    """The HTTP endpoint: Prometheus metrics, /healthz, the web page and its API."""

    enabled: bool = Field(default=True, description="Serve /metrics and /healthz.")
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        description="Bind address. Loopback by default; 0.0.0.0 exposes it to the network.",
    )
    port: int = Field(default=9108, ge=0, le=65535, description="Port (0: any free port).")
    web: bool = Field(
        default=True,
        description="Serve the web page (/) and its JSON API (/api/...) beside /metrics. "
        "Pictures only of cameras whose snapshots are on.",
    )
    auth: HttpAuthConfig | None = Field(
        default=None,
        description="Ask for a password (HTTP basic) or a bearer token on every path but "
        "/healthz; default: none (fine on loopback).",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, what="host")


def _default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "node"
    return host[:MAX_ID_LENGTH].strip("-_") or "node"


# The cameras one file may list; the MQTT manifest of them must fit one inbound packet.
MAX_CAMERAS: Final = 4096
# Settings merged key-wise rather than replaced when both defaults and a camera give them.
_MERGED_SECTIONS: Final = ("publish", "tracking", "snapshots", "motion", "main_stream")


class ServiceConfig(StrictModel):
    """The whole configuration file."""

    node_id: str = Field(
        default_factory=_default_node_id,
        pattern=ID_PATTERN,
        description="This node's id in topics and metrics; default: the host name.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The detector.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics endpoint.")
    snapshot_dir: SnapshotDirConfig | None = Field(
        default=None,
        description="Also write each event's snapshot to a directory (bounded); default: no "
        "files, snapshots only on MQTT.",
    )
    shard: ShardConfig = Field(
        default_factory=ShardConfig,
        description="This replica's share of the cameras when N replicas run this file "
        "(EDGE_FACEDET_SHARD=I/N overrides it); default: every camera.",
    )
    defaults: CameraSettings = Field(
        default_factory=CameraSettings, description="Settings every camera inherits."
    )
    cameras: Annotated[list[CameraConfig], Field(min_length=1, max_length=MAX_CAMERAS)] = Field(
        description="The cameras."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """Fill each camera's missing settings from `defaults` (nested sections merged)."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults")
        if defaults is None:
            defaults = {}
        cameras = data.get("cameras")
        if not isinstance(defaults, dict) or not isinstance(cameras, list):
            return data
        # Invalid defaults are reported once, at `defaults.<field>`; merging them would
        # repeat the same error under every camera and blame the camera for it.
        try:
            CameraSettings.model_validate(defaults)
        except ValidationError:
            return data
        merged = []
        for camera in cameras:
            if isinstance(camera, dict):
                combined = {**defaults, **camera}
                for section in _MERGED_SECTIONS:
                    own = camera.get(section)
                    inherited = defaults.get(section)
                    # `publish:` left empty in a camera means "as in defaults", not an error.
                    inherited = inherited if isinstance(inherited, dict) else {}
                    if own is None or isinstance(own, dict):
                        combined[section] = {**inherited, **(own or {})}
                merged.append(combined)
            else:
                merged.append(camera)
        return {**data, "cameras": merged}

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        first: dict[str, int] = {}
        for index, camera in enumerate(cameras):
            if camera.id in first:
                raise ValueError(
                    f"duplicate camera id {camera.id!r} "
                    f"(cameras[{first[camera.id]}] and cameras[{index}])"
                )
            first[camera.id] = index
        return cameras
