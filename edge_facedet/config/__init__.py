"""The service configuration: pydantic models, one per concern, and loading them from YAML.

This package owns everything between the operator's YAML file and a validated, immutable
`ServiceConfig`, one concept per module:

- `loader`: safe YAML parsing (duplicate keys, aliases, size and nesting refused) and
  `load_config`, which validates and checks that every secret and TLS file can be read;
- `service`, `model`, `mqtt`, `camera`, `publish`, `tracking`, `snapshots`, `motion`: the
  models and their bounds, merging `defaults` into each camera and resolving relative
  paths against the config file's directory (`base` holds what they share);
- `secrets`: `SecretSource`, a secret read from a file, the environment or a systemd
  credential;
- `files`: reading the files a config names (the config, password files, credentials):
  regular files only, so a FIFO or device is refused instead of waited on, and bounded;
- `errors` and `messages`: the operator-facing `ConfigError` and the wording of its lines;
- `camera_urls`: the URLs handed to the decoders (`detect_open_url`) or shown in logs
  (`display_url`, `display_detect_url`).
- `unit_sandbox`: camera files the systemd unit cannot see (`check-config` warns).
- `mainstream`: snapshots from the main stream of a camera detected on its substream.
- `shard`: which share of the cameras this replica runs (`shard:`, `EDGE_FACEDET_SHARD`),
  resolved to a `Shard`; the assignment itself is `edge_facedet.sharding`.

Every field has a description and bounds (numbers finite); unknown keys are errors
(`extra="forbid"`), so a typo is reported instead of silently ignored. Secrets are
`SecretStr` and are resolved from a file, an environment variable or a systemd credential;
they are never part of an error message: messages are built from pydantic's `loc` and `msg`
only, never from its `input`.
`edge-facedet check-config` (in `edge_facedet.cli`) prints a summary of a loaded config.
"""

from __future__ import annotations

from edge_facedet.config.camera import CameraConfig, CameraSettings, Roi
from edge_facedet.config.camera_urls import detect_open_url, display_detect_url, display_url
from edge_facedet.config.errors import ConfigError
from edge_facedet.config.httpauth import HttpAuthConfig
from edge_facedet.config.loader import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, load_config
from edge_facedet.config.mainstream import FieldOfView, MainStreamConfig, main_stream_active
from edge_facedet.config.model import ModelConfig
from edge_facedet.config.motion import MotionConfig
from edge_facedet.config.mqtt import MqttConfig, QosConfig, TlsConfig
from edge_facedet.config.publish import PublishConfig, PublishPolicy
from edge_facedet.config.secrets import MAX_SECRET_BYTES, SecretSource
from edge_facedet.config.service import MetricsConfig, ServiceConfig
from edge_facedet.config.shard import SHARD_ENV, Shard, ShardConfig, resolve_shard
from edge_facedet.config.snapshots import SnapshotConfig, SnapshotDirConfig, SnapshotMode
from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.inference.model import PerformanceHint, Precision
from edge_facedet.sources.source import Decoder

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_SECRET_BYTES",
    "MAX_YAML_DEPTH",
    "SHARD_ENV",
    "CameraConfig",
    "CameraSettings",
    "ConfigError",
    "Decoder",
    "FieldOfView",
    "HttpAuthConfig",
    "MainStreamConfig",
    "MetricsConfig",
    "ModelConfig",
    "MotionConfig",
    "MqttConfig",
    "PerformanceHint",
    "Precision",
    "PublishConfig",
    "PublishPolicy",
    "QosConfig",
    "Roi",
    "SecretSource",
    "ServiceConfig",
    "Shard",
    "ShardConfig",
    "SnapshotConfig",
    "SnapshotDirConfig",
    "SnapshotMode",
    "TlsConfig",
    "TrackingConfig",
    "detect_open_url",
    "display_detect_url",
    "display_url",
    "load_config",
    "main_stream_active",
    "resolve_shard",
]
