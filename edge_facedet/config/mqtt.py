"""The MQTT settings (`mqtt:`): broker, topics, QoS, credentials and TLS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_facedet.config.base import (
    MIN_DELAY_S,
    StrictModel,
    check_host,
    mqtt_text_problem,
    resolve_path,
)
from edge_facedet.config.errors import field_error
from edge_facedet.config.secrets import SecretSource


def _check_topic_prefix(prefix: str) -> str:
    # MQTT topic rules (MQTT 3.1.1 section 4.7): wildcards only in filters, no U+0000;
    # a leading "$" is reserved for the broker ($SYS); empty levels are legal but are always
    # a typo here ("a//b", "/a", "a/").
    if "#" in prefix or "+" in prefix:
        raise ValueError("topic_prefix cannot contain the MQTT wildcards # or +")
    if (problem := mqtt_text_problem(prefix)) is not None:
        raise ValueError(f"topic_prefix cannot contain {problem}")
    if re.search(r"\s", prefix):
        raise ValueError("topic_prefix cannot contain whitespace")
    if prefix.startswith("$"):
        raise ValueError("topic_prefix cannot start with $ (reserved for the broker)")
    if any(level == "" for level in prefix.split("/")):
        raise ValueError("topic_prefix cannot have empty levels (leading, trailing or double /)")
    return prefix


class QosConfig(StrictModel):
    """MQTT quality of service per message kind."""

    faces: Literal[0, 1, 2] = Field(default=0, description="QoS of per-frame faces messages.")
    state: Literal[0, 1, 2] = Field(default=1, description="QoS of retained camera states.")
    status: Literal[0, 1, 2] = Field(default=1, description="QoS of the retained node status.")
    events: Literal[0, 1, 2] = Field(
        default=1,
        description="QoS of track events (new, update, end): each is sent once, so losing "
        "one loses a track's start or end, unlike a faces message the next frame replaces.",
    )


class TlsConfig(StrictModel):
    """MQTT over TLS. The server's hostname is always verified unless `insecure`."""

    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(default=None, description="CA bundle; default: system CAs.")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="Client private key (PEM).")
    insecure: bool = Field(
        default=False,
        description="Skip certificate and hostname verification. Refused unless "
        "`allow_insecure` is also true.",
    )
    allow_insecure: bool = Field(
        default=False, description="Explicit operator override that permits `insecure`."
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _check(self) -> TlsConfig:
        if self.insecure and not self.allow_insecure:
            raise field_error(
                "insecure", "insecure TLS is refused unless allow_insecure: true is also set"
            )
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise field_error(missing, "cert_file and key_file go together")
        if not self.enabled:
            # TLS settings without `enabled` would silently connect in plain text.
            for name in ("ca_file", "cert_file", "insecure"):
                if getattr(self, name):
                    raise field_error(name, "is set but TLS is not enabled (enabled: true)")
        return self


class MqttConfig(StrictModel):
    """The MQTT broker connection and topics."""

    host: str = Field(default="127.0.0.1", min_length=1, max_length=253, description="Broker host.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port; default 1883, or 8883 with TLS."
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="MQTT client id (printable ASCII); default edge-facedet-<node_id>.",
    )
    topic_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Topic prefix; default edge-facedet/<node_id>. No wildcards, no empty "
        "levels, no leading $.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    qos: QosConfig = Field(default_factory=QosConfig, description="QoS per message kind.")
    username: str | None = Field(
        default=None, min_length=1, max_length=255, description="Broker user name."
    )
    password: SecretSource | None = Field(
        default=None, description="Broker password source (file, env, credential, value)."
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")
    outbox_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Messages kept while disconnected; the oldest are dropped (and counted).",
    )
    reconnect_initial_s: float = Field(
        default=1.0,
        ge=MIN_DELAY_S,
        le=60,
        description="First reconnect delay cap (full jitter; 0.01..60 s).",
    )
    reconnect_max_s: float = Field(
        default=30.0,
        ge=MIN_DELAY_S,
        le=600,
        description="Largest reconnect delay (full jitter; 0.01..600 s).",
    )
    home_assistant_discovery: bool = Field(
        default=False, description="Publish Home Assistant MQTT discovery for each camera."
    )

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls.enabled else 1883

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, what="host")

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str | None) -> str | None:
        return None if value is None else _check_topic_prefix(value)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and (problem := mqtt_text_problem(value)) is not None:
            raise ValueError(f"username cannot contain {problem}")
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.password is not None and self.username is None:
            raise field_error("password", "password is set but username is not")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise field_error("reconnect_max_s", "must be >= reconnect_initial_s")
        return self
