"""The service configuration: pydantic models, one per concern, and loading them from YAML.

This module owns everything between the operator's YAML file and a validated, immutable
`ServiceConfig`: safe YAML parsing (duplicate keys, aliases, size and nesting refused), the
models and their bounds, merging `defaults` into each camera, resolving relative paths against
the config file's directory, resolving secrets (`SecretSource`), the operator-facing
`ConfigError`, the URLs handed to OpenCV (`detect_open_url`) or shown in logs
(`display_url`, `display_detect_url`), and the body of `edge-facedet check-config`.

Every field has a description and bounds; unknown keys are errors (`extra="forbid"`), so a
typo is reported instead of silently ignored. Secrets are `SecretStr` and are resolved from a
file, an environment variable or a systemd credential; they are never part of an error message:
messages are built from pydantic's `loc` and `msg` only, never from its `input`.
"""

from __future__ import annotations

import enum
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edge_facedet.redact import redact_url
from edge_facedet.sources.urls import SCHEMES, SourceKind, scheme_of, source_kind
from edge_facedet.tools.assets import PRECISIONS

if TYPE_CHECKING:
    from typing import TextIO

# Spelled out for the type checker; tests check it against assets.PRECISIONS (the manifest).
Precision = Literal["FP32", "FP16", "FP16-INT8"]

MAX_CONFIG_BYTES: Final = 1024 * 1024
# Secrets are short; a bigger "password file" is a misconfiguration (or /dev/zero).
MAX_SECRET_BYTES: Final = 64 * 1024
# Real configs nest 4-5 levels; the limit stops `[[[[...` from exhausting the stack.
MAX_YAML_DEPTH: Final = 32

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# OpenVINO device names: physical devices, optionally numbered (GPU.1), and the virtual ones
# that take a device list (AUTO:GPU,CPU; AUTO:-CPU excludes; BATCH:GPU(4) sets the batch).
_PHYSICAL_DEVICES = frozenset({"CPU", "GPU", "NPU"})
_VIRTUAL_DEVICES = frozenset({"AUTO", "MULTI", "HETERO", "BATCH"})
_DEVICE_ITEM = re.compile(
    r"^(?P<exclude>-)?(?P<name>[A-Z]+)(\.[0-9]{1,2})?(?P<batch>\([0-9]{1,3}\))?$"
)


def _field_error(field: str, message: str) -> PydanticCustomError:
    """An error from a model validator that `ConfigError` reports at `<model>.<field>`."""
    return PydanticCustomError("config", "{message}", {"message": message, "field": field})


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Make a relative path absolute against the config file's directory (context base_dir)."""
    if value is None:
        return None
    if _CONTROL_CHARS.search(str(value)):
        raise ValueError("path contains control characters")
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if isinstance(base, Path) and not value.is_absolute():
        return base / value
    return value


class ConfigError(Exception):
    """A configuration problem, worded for the operator: its str is the whole message.

    One line per problem, each naming the file and the field path. Never contains the value
    of a secret field.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PerformanceHint(enum.Enum):
    THROUGHPUT = "THROUGHPUT"
    LATENCY = "LATENCY"
    CUMULATIVE_THROUGHPUT = "CUMULATIVE_THROUGHPUT"


class PublishPolicy(enum.Enum):
    EVERY_FRAME = "every_frame"
    ON_FACES = "on_faces"
    ON_CHANGE = "on_change"


class SecretSource(_Strict):
    """Where a secret comes from. Exactly one of the fields is set."""

    # A password may legitimately begin or end with spaces: keep inline values verbatim.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    file: Path | None = Field(
        default=None,
        description="Read the secret from this file (one trailing newline removed); "
        "relative to the config file's directory.",
    )
    env: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Read the secret from this environment variable.",
    )
    credential: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        description="Read the secret from $CREDENTIALS_DIRECTORY/<name> (systemd LoadCredential=).",
    )
    value: SecretStr | None = Field(
        default=None,
        description="The secret itself. Prefer file, env or credential: configs get copied.",
    )

    @model_validator(mode="before")
    @classmethod
    def _mapping_only(cls, data: Any) -> Any:
        # `password: hunter2` is the likely mistake; say what to write without echoing it.
        if isinstance(data, str | int | float | bool):
            raise PydanticCustomError(
                "secret_shape",
                "a secret is a mapping with one of file:, env:, credential: or value:, "
                "not a plain value",
            )
        return data

    @field_validator("file")
    @classmethod
    def _file_path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @field_validator("credential")
    @classmethod
    def _credential_name(cls, value: str | None) -> str | None:
        # The pattern admits "." and ".."; either would escape $CREDENTIALS_DIRECTORY.
        if value is not None and set(value) == {"."}:
            raise ValueError("credential name cannot be '.' or '..'")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        given = [
            name
            for name in ("file", "env", "credential", "value")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of file, env, credential, value"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def describe(self) -> str:
        """Where the secret comes from, for messages; never the secret itself."""
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"env {self.env}"
        if self.credential is not None:
            return f"credential {self.credential}"
        return "inline value"

    def reveal(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        credentials_dir: Path | None = None,
    ) -> str:
        """The secret. Raises `ConfigError` naming the source (never the content).

        `environ` defaults to the process environment; `credentials_dir` defaults to
        `$CREDENTIALS_DIRECTORY` from `environ` (systemd sets it for LoadCredential=).
        """
        env = os.environ if environ is None else environ
        if self.value is not None:
            secret = self.value.get_secret_value()
        elif self.env is not None:
            if self.env not in env:
                raise ConfigError(f"environment variable {self.env} is not set")
            secret = env[self.env]
        elif self.credential is not None:
            if credentials_dir is None:
                directory = env.get("CREDENTIALS_DIRECTORY")
                if not directory:
                    raise ConfigError(
                        f"credential {self.credential}: $CREDENTIALS_DIRECTORY is not set "
                        f"(run under systemd with LoadCredential={self.credential}:...)"
                    )
                credentials_dir = Path(directory)
            secret = _read_secret_file(credentials_dir / self.credential, "credential")
        else:
            assert self.file is not None  # noqa: S101 - guaranteed by _exactly_one
            secret = _read_secret_file(self.file, "password file")
        if secret == "":
            raise ConfigError(f"{self.describe()}: the secret is empty")
        return secret


def _read_secret_file(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{what} {path} cannot be read: {reason}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 (byte offset {exc.start})") from None
    # Editors and `echo` add one newline; anything else is part of the secret.
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _check_device(device: str) -> str:
    """Validate an OpenVINO device string; the message names the part that is wrong."""
    head, sep, tail = device.partition(":")
    if not _DEVICE_ITEM.match(head) or head.startswith("-") or "(" in head:
        raise ValueError(
            "device must be CPU, GPU, GPU.<n>, NPU, or AUTO/MULTI/HETERO/BATCH optionally "
            "followed by :<device list>"
        )
    name = head.split(".", 1)[0]
    if name not in _PHYSICAL_DEVICES | _VIRTUAL_DEVICES:
        raise ValueError(
            f"unknown device {name!r}; known: "
            + ", ".join(sorted(_PHYSICAL_DEVICES | _VIRTUAL_DEVICES))
        )
    if not sep:
        return device
    if name not in _VIRTUAL_DEVICES or name != head:
        raise ValueError(f"only AUTO, MULTI, HETERO and BATCH take a device list, not {head}")
    items = tail.split(",")
    for item in items:
        match = _DEVICE_ITEM.match(item)
        if match is None or match["name"] not in _PHYSICAL_DEVICES:
            raise ValueError(
                f"{name} device list must name CPU, GPU, GPU.<n> or NPU, comma-separated"
            )
        if match["exclude"] and name != "AUTO":
            raise ValueError("only AUTO accepts excluded devices (-CPU)")
        if match["batch"] and name != "BATCH":
            raise ValueError("only BATCH accepts a batch size (GPU(4))")
    return device


def _check_topic_prefix(prefix: str) -> str:
    # MQTT topic rules (MQTT 3.1.1 section 4.7): wildcards only in filters, no U+0000;
    # a leading "$" is reserved for the broker ($SYS); empty levels are legal but are always
    # a typo here ("a//b", "/a", "a/").
    if "#" in prefix or "+" in prefix:
        raise ValueError("topic_prefix cannot contain the MQTT wildcards # or +")
    if _CONTROL_CHARS.search(prefix) or re.search(r"\s", prefix):
        raise ValueError("topic_prefix cannot contain whitespace or control characters")
    if prefix.startswith("$"):
        raise ValueError("topic_prefix cannot start with $ (reserved for the broker)")
    if any(level == "" for level in prefix.split("/")):
        raise ValueError("topic_prefix cannot have empty levels (leading, trailing or double /)")
    return prefix


def _check_host(host: str, what: str) -> str:
    if "://" in host or "/" in host:
        raise ValueError(f"{what} is a host name or address, not a URL")
    if re.search(r"\s", host) or _CONTROL_CHARS.search(host):
        raise ValueError(f"{what} cannot contain whitespace or control characters")
    return host


class ModelConfig(_Strict):
    """The detector: which model files, which device, how requests are batched."""

    precision: Precision = Field(
        default="FP16-INT8", description=f"Model precision, one of {', '.join(PRECISIONS)}."
    )
    path: Path | None = Field(
        default=None,
        description="Explicit path to the model .xml; overrides `dir` and `precision`. "
        "Relative to the config file's directory.",
    )
    dir: Path | None = Field(
        default=None,
        description="Models root as laid out by `edge-facedet model fetch --dest`; "
        "default $EDGE_FACEDET_MODELS or ~/.local/share/edge-facedet/models. "
        "Relative to the config file's directory.",
    )
    device: str = Field(
        default="AUTO",
        min_length=1,
        max_length=100,
        description="OpenVINO device: AUTO, CPU, GPU, GPU.1, NPU, AUTO:GPU,CPU, AUTO:-CPU, ...",
    )
    performance_hint: PerformanceHint = Field(
        default=PerformanceHint.THROUGHPUT, description="OpenVINO performance hint."
    )
    batch_size: int = Field(
        default=1, ge=1, le=32, description="Frames per inference request (model reshape)."
    )
    infer_requests: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Infer requests in flight; default: twice the device's optimal number.",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0.0,
        le=200.0,
        description="How long the scheduler waits to fill a batch before sending a partial one.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="OpenVINO model cache, so a restart does not recompile. Default: none. "
        "Relative to the config file's directory.",
    )
    inference_threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU inference threads; default: OpenVINO's."
    )

    @field_validator("path", "dir", "cache_dir")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return _check_device(value)


class QosConfig(_Strict):
    """MQTT quality of service per message kind."""

    faces: Literal[0, 1, 2] = Field(default=0, description="QoS of per-frame faces messages.")
    state: Literal[0, 1, 2] = Field(default=1, description="QoS of retained camera states.")
    status: Literal[0, 1, 2] = Field(default=1, description="QoS of the retained node status.")


class TlsConfig(_Strict):
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
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _check(self) -> TlsConfig:
        if self.insecure and not self.allow_insecure:
            raise _field_error(
                "insecure", "insecure TLS is refused unless allow_insecure: true is also set"
            )
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _field_error(missing, "cert_file and key_file go together")
        if not self.enabled:
            # TLS settings without `enabled` would silently connect in plain text.
            for name in ("ca_file", "cert_file", "insecure"):
                if getattr(self, name):
                    raise _field_error(name, "is set but TLS is not enabled (enabled: true)")
        return self


class MqttConfig(_Strict):
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
        default=1.0, gt=0, le=60, description="First reconnect delay cap (full jitter)."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=600, description="Largest reconnect delay (full jitter)."
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
        return _check_host(value, "host")

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str | None) -> str | None:
        return None if value is None else _check_topic_prefix(value)

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL_CHARS.search(value):
            raise ValueError("username cannot contain control characters")
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.password is not None and self.username is None:
            raise _field_error("password", "password is set but username is not")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise _field_error("reconnect_max_s", "must be >= reconnect_initial_s")
        return self


class MetricsConfig(_Strict):
    """The Prometheus metrics and /healthz HTTP endpoint."""

    enabled: bool = Field(default=True, description="Serve /metrics and /healthz.")
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        description="Bind address. Loopback by default; 0.0.0.0 exposes it to the network.",
    )
    port: int = Field(default=9108, ge=0, le=65535, description="Port (0: any free port).")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value, "host")


class PublishConfig(_Strict):
    """When a camera's faces messages are published."""

    policy: PublishPolicy = Field(
        default=PublishPolicy.ON_CHANGE,
        description="every_frame: every processed frame; on_faces: frames with faces; "
        "on_change: when the face count changes, plus a heartbeat.",
    )
    heartbeat_s: float = Field(
        default=10.0, gt=0, le=3600, description="on_change: publish at least this often."
    )


class Roi(_Strict):
    """Region of interest in normalised coordinates; faces whose centre is outside are dropped."""

    x_min: float = Field(ge=0.0, le=1.0, description="Left edge, 0..1.")
    y_min: float = Field(ge=0.0, le=1.0, description="Top edge, 0..1.")
    x_max: float = Field(ge=0.0, le=1.0, description="Right edge, 0..1.")
    y_max: float = Field(ge=0.0, le=1.0, description="Bottom edge, 0..1.")

    @model_validator(mode="after")
    def _ordered(self) -> Roi:
        if not self.x_min < self.x_max:
            raise _field_error("x_max", "roi needs x_min < x_max")
        if not self.y_min < self.y_max:
            raise _field_error("y_max", "roi needs y_min < y_max")
        return self


class CameraSettings(_Strict):
    """Per-camera settings that may also be given once under `defaults`."""

    enabled: bool = Field(default=True, description="Read this camera.")
    detect_fps: float = Field(
        default=5.0, gt=0, le=120, description="Frames per second sent to the detector."
    )
    confidence_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Faces below this confidence are dropped."
    )
    min_face_px: int = Field(
        default=0, ge=0, le=4096, description="Faces smaller than this (height, px) are dropped."
    )
    roi: Roi | None = Field(default=None, description="Region of interest; default whole frame.")
    publish: PublishConfig = Field(
        default_factory=PublishConfig,
        description="Publish policy; a camera's keys are merged over `defaults.publish`.",
    )
    loop: bool = Field(default=False, description="Files only: start again at the end.")
    realtime: bool = Field(
        default=True,
        description="Files only: true plays the file at its frame rate like a live camera "
        "(frames the detector cannot take in time are dropped); false reads it as fast as the "
        "detector takes frames and drops none, to analyse a recording.",
    )
    open_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Stream open timeout.")
    read_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Frame read timeout.")
    stall_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="No frame for this long means reconnect."
    )
    reconnect_initial_s: float = Field(
        default=1.0, gt=0, le=300, description="First reconnect delay cap (full jitter)."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Largest reconnect delay (full jitter)."
    )
    decoder_threads: int = Field(
        default=1, ge=0, le=16, description="FFmpeg decoder threads per camera (0: FFmpeg's)."
    )
    decoder: Literal["opencv", "pyav"] = Field(
        default="opencv",
        description="What demuxes and decodes the stream: OpenCV (streams, files, devices) or "
        "PyAV (streams and files), which can decode less than every frame "
        "(keyframes_only, skip_loop_filter).",
    )
    keyframes_only: bool = Field(
        default=False,
        description="decoder pyav, network streams: decode only the keyframes, for a fraction "
        "of the decoding CPU; detections then come at most at the camera's keyframe (I-frame) "
        "rate, every keyframe while detect_fps is above that rate. stall_timeout_s must exceed "
        "the keyframe interval.",
    )
    skip_loop_filter: bool = Field(
        default=False,
        description="decoder pyav: skip H.264/HEVC deblocking, about a sixth less decoding "
        "CPU; frames are slightly blockier than a full decode.",
    )
    reader_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Niceness added to the camera's reader (decoder) thread (Linux). 0 lets "
        "decoding, which must keep up with the camera, take its share first and inference "
        "the rest; a higher value favours inference, and readers that then fall behind skip "
        "detections (max_lag_s).",
    )
    max_lag_s: float = Field(
        default=0.5,
        gt=0,
        le=3600,
        description="RTSP, RTMP, UDP and TCP streams: due frames read more than this many "
        "seconds behind the stream (by its timestamps) are decoded but not detected, so a host "
        "that decodes slower than its cameras send catches up instead of publishing ever older "
        "detections. Counted in edge_facedet_frames_stale_total.",
    )

    @model_validator(mode="after")
    def _reconnect_order(self) -> CameraSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise _field_error("reconnect_max_s", "must be >= reconnect_initial_s")
        return self


def _is_relative_file(url: str) -> bool:
    """A camera URL that names a file relative to the config file (not a URL or device)."""
    return not (scheme_of(url) or url.startswith("/") or url.isdigit())


class CameraConfig(CameraSettings):
    """One camera. Any setting not given here comes from `defaults`."""

    id: str = Field(
        pattern=_ID_PATTERN,
        description="Unique id: letters, digits, _ and -; used in topics and metric labels.",
    )
    name: str | None = Field(default=None, max_length=200, description="Human-readable name.")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="rtsp://, rtsps://, http(s)://, a file path (relative to this config file) "
        "or a V4L2 device (/dev/video0 or 0). Credentials in the URL are accepted and redacted.",
    )
    detect_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="The stream read for detection, typically the camera's low-resolution "
        "substream; default: `url`. Same forms and credential handling as `url`; "
        "boxes are reported in this stream's pixels.",
    )
    username: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Stream user name, inserted into the URL at open time.",
    )
    password: SecretSource | None = Field(
        default=None, description="Stream password source, inserted into the URL at open time."
    )

    @field_validator("url", "detect_url", mode="before")
    @classmethod
    def _device_index(cls, url: Any) -> Any:
        # `url: 0` (a V4L2 index) arrives from YAML as an int.
        if isinstance(url, int) and not isinstance(url, bool) and url >= 0:
            return str(url)
        return url

    @field_validator("url", "detect_url")
    @classmethod
    def _url_shape(cls, url: str | None, info: ValidationInfo) -> str | None:
        # Never put the URL itself in a message here: it may hold a password.
        if url is None:  # detect_url: null
            return None
        if _CONTROL_CHARS.search(url):
            raise ValueError("URL contains control characters")
        scheme = scheme_of(url)
        if scheme is not None:
            if scheme not in SCHEMES:
                raise ValueError(
                    f"unsupported URL scheme {scheme!r}; use one of " + ", ".join(sorted(SCHEMES))
                )
            if scheme == "file":
                return url
            if " " in url:
                raise ValueError("URL contains spaces (percent-encode them as %20)")
            try:
                parts = urlsplit(url)
                host = parts.hostname
                _ = parts.port
            except ValueError:
                raise ValueError("malformed URL (bad host or port)") from None
            if not host:
                raise ValueError("URL has no host")
            if "@" not in parts.netloc and "@" in url:
                # `rtsp://admin:12/34@cam/` parses as host "admin", port 12: the password would
                # be in the "path" and escape redaction. Credentials must be percent-encoded.
                raise ValueError(
                    "URL has '@' after the host; percent-encode / ? # @ in user names and "
                    "passwords (%2F %3F %23 %40), or use username: and password:"
                )
            return url
        lowered = url.lower()
        if any(lowered.startswith(f"{scheme}:") for scheme in SCHEMES):
            raise ValueError("malformed URL: expected <scheme>:// (e.g. rtsp://host/path)")
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if isinstance(base, Path) and _is_relative_file(url):
            return str(base / url)
        return url

    @model_validator(mode="after")
    def _realtime_files_only(self) -> CameraConfig:
        if self.realtime:
            return self
        if source_kind(self.detect_url or self.url) is not SourceKind.FILE:
            raise _field_error(
                "realtime", "false applies to files only (a live source cannot be read ahead)"
            )
        return self

    @model_validator(mode="after")
    def _pyav_reads_no_devices(self) -> CameraConfig:
        if self.decoder == "pyav" and source_kind(self.detect_url or self.url) is SourceKind.DEVICE:
            raise _field_error("decoder", "pyav reads streams and files, not V4L2 devices")
        return self

    @model_validator(mode="after")
    def _partial_decoding_needs_pyav(self) -> CameraConfig:
        # Checked on the camera, after defaults are merged: `defaults` may set one half.
        if self.decoder != "pyav":
            for field in ("keyframes_only", "skip_loop_filter"):
                if getattr(self, field):
                    raise _field_error(field, "needs decoder: pyav")
        if (
            self.keyframes_only
            and source_kind(self.detect_url or self.url) is not SourceKind.NETWORK
        ):
            raise _field_error("keyframes_only", "applies to network streams, not files")
        return self

    @model_validator(mode="after")
    def _credentials(self) -> CameraConfig:
        if self.password is not None and self.username is None:
            raise _field_error("password", "password is set but username is not")
        if self.username is None:
            return self
        if _CONTROL_CHARS.search(self.username):
            raise _field_error("username", "cannot contain control characters")
        # The substream is the same camera: the credentials go into both URLs.
        for url in (self.url, self.detect_url):
            if url is None:
                continue
            if scheme_of(url) is None or source_kind(url) is not SourceKind.NETWORK:
                raise _field_error("username", "only network URLs (rtsp://, http://, ...) take one")
            if "@" in urlsplit(url).netloc:
                raise _field_error(
                    "username", "the URL already contains credentials; give them in one place"
                )
        return self


def _default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "node"
    return host[:64].strip("-_") or "node"


# Settings merged key-wise rather than replaced when both defaults and a camera give them.
_MERGED_SECTIONS: Final = ("publish",)


class ServiceConfig(_Strict):
    """The whole configuration file."""

    node_id: str = Field(
        default_factory=_default_node_id,
        pattern=_ID_PATTERN,
        description="This node's id in topics and metrics; default: the host name.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The detector.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics endpoint.")
    defaults: CameraSettings = Field(
        default_factory=CameraSettings, description="Settings every camera inherits."
    )
    cameras: Annotated[list[CameraConfig], Field(min_length=1, max_length=256)] = Field(
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


# --------------------------------------------------------------------------------------------
# YAML loading


class _SafeStrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, anchors/aliases and deep nesting.

    Aliases are refused outright rather than counted: a handful of aliases nested a few
    levels deep already expands to billions of nodes for whoever walks the result (pydantic
    would), and a config has no need for them: `defaults` is the way to share settings.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _YamlError(
                "YAML anchors and aliases (&name, *name, <<:) are not supported; "
                "use the `defaults` section for settings shared by cameras",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlError(f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # noqa: FBT001, FBT002 - PyYAML's signature
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first_line = seen.get(key)
            except TypeError:
                raise _YamlError("a mapping key is not hashable", key_node.start_mark) from None
            if first_line is not None:
                raise _YamlError(
                    f"duplicate key {_short(key)} (first at line {first_line})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _YamlError(Exception):
    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(mark: yaml.Mark | None) -> str:
    # Only line and column: a Mark's str() quotes the source line, which may hold a secret.
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _parse_yaml(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty")
    try:
        # The loader class is a SafeLoader subclass: only plain YAML types are constructed.
        return yaml.load(text, Loader=_SafeStrictLoader)  # noqa: S506
    except _YamlError as exc:
        raise ConfigError(f"{path}: {_where(exc.mark)}{exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}: {_where(exc.problem_mark)}invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"{path}: invalid YAML: character #x{exc.character:04x} at offset {exc.position} "
            "is not allowed"
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__})") from None


# --------------------------------------------------------------------------------------------
# Error messages


def _camera_label(data: Any, index: int) -> str:
    label = f"cameras[{index}]"
    if isinstance(data, dict):
        cameras = data.get("cameras")
        if isinstance(cameras, list) and index < len(cameras) and isinstance(cameras[index], dict):
            camera_id = cameras[index].get("id")
            if isinstance(camera_id, str) and camera_id:
                label += f" (id {_short(camera_id, 40)})"
    return label


_SECRET_FIELDS = frozenset({"password"})


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    after_secret = False
    for position, item in enumerate(loc):
        if isinstance(item, int):
            if position == 1 and loc[0] == "cameras":
                parts[-1] = _camera_label(data, item)
            else:
                parts[-1] += f"[{item}]"
            continue
        if after_secret and item not in SecretSource.model_fields:
            # An unknown key under a secret may be the secret itself (`password: {hunter2}`).
            parts.append("<unknown key>")
            continue
        after_secret = item in _SECRET_FIELDS
        parts.append(str(item))
    return ".".join(parts) if parts else "(top level)"


def _format_validation_error(path: Path, exc: ValidationError, data: Any) -> ConfigError:
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=True):
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        field = ctx.get("field") if error["type"] == "config" else None
        if isinstance(field, str):
            loc = (*loc, field)
        message = str(error["msg"])
        if error["type"] == "string_pattern_mismatch" and loc and loc[-1] in ("id", "node_id"):
            message = "must be 1-64 letters, digits, _ or -, starting with a letter or digit"
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(f"{path}: {_format_loc(loc, data)}: {message}")
    return ConfigError(problems)


# --------------------------------------------------------------------------------------------
# Public API


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read, parse and validate the config file; check that every secret can be read.

    Raises `ConfigError` (one line per problem, naming the file and the field) for anything
    wrong: unreadable file, bad encoding, bad YAML, invalid settings, unreadable secrets.
    """
    env = os.environ if environ is None else environ
    data = _parse_yaml(path)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: the top level must be a mapping of settings, not {kind}")
    base_dir = Path(os.path.abspath(path)).parent  # noqa: PTH100 - no symlink resolution wanted
    try:
        config = ServiceConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _format_validation_error(path, exc, data) from None
    problems = [
        f"{path}: {where}: {problem}"
        for where, secret in _secret_sources(config)
        if (problem := _reveal_problem(secret, env)) is not None
    ]
    # A missing CA or client key would otherwise surface only as endless reconnect failures.
    tls = config.mqtt.tls
    problems += [
        f"{path}: mqtt.tls.{name}: {problem}"
        for name in ("ca_file", "cert_file", "key_file")
        if (problem := _unreadable(getattr(tls, name))) is not None
    ]
    if problems:
        raise ConfigError(problems)
    return config


def _unreadable(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or type(exc).__name__}"
    return None


def _reveal_problem(secret: SecretSource, environ: Mapping[str, str]) -> str | None:
    try:
        secret.reveal(environ=environ)
    except ConfigError as exc:
        return str(exc)
    return None


def _secret_sources(config: ServiceConfig) -> list[tuple[str, SecretSource]]:
    found = []
    if config.mqtt.password is not None:
        found.append(("mqtt.password", config.mqtt.password))
    for index, camera in enumerate(config.cameras):
        if camera.password is not None:
            found.append((f"cameras[{index}] (id {camera.id!r}).password", camera.password))
    return found


def detect_open_url(
    camera: CameraConfig,
    *,
    environ: Mapping[str, str] | None = None,
    credentials_dir: Path | None = None,
) -> str:
    """The URL the reader opens for detection: `detect_url` if set, else `url`.

    Contains the password: never log it; log `display_detect_url(camera)` instead.
    """
    return _with_credentials(
        camera,
        url=camera.detect_url or camera.url,
        environ=environ,
        credentials_dir=credentials_dir,
    )


def _with_credentials(
    camera: CameraConfig,
    *,
    url: str,
    environ: Mapping[str, str] | None,
    credentials_dir: Path | None,
) -> str:
    if camera.username is None:
        return url
    userinfo = quote(camera.username, safe="")
    if camera.password is not None:
        secret = camera.password.reveal(environ=environ, credentials_dir=credentials_dir)
        userinfo += ":" + quote(secret, safe="")
    parts = urlsplit(url)
    return urlunsplit(
        (parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment)
    )


def display_url(camera: CameraConfig) -> str:
    """The camera's URL for logs, state messages and metrics: credentials redacted."""
    return _display(camera, url=camera.url)


def display_detect_url(camera: CameraConfig) -> str:
    """`detect_open_url` for logs: credentials redacted."""
    return _display(camera, url=camera.detect_url or camera.url)


def _display(camera: CameraConfig, *, url: str) -> str:
    if camera.username is not None:
        # Show that credentials are used, the same way as for credentials in the URL.
        parts = urlsplit(url)
        camera_url = urlunsplit(
            (parts.scheme, f"user:pass@{parts.netloc}", parts.path, parts.query, parts.fragment)
        )
        return redact_url(camera_url)
    return redact_url(url)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_config(path: Path, *, out: TextIO, err: TextIO) -> int:
    """`edge-facedet check-config FILE`: 0 and a summary if valid, else 2 and the problems."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        err.write(f"{exc}\n")
        return 2
    enabled = [camera for camera in config.cameras if camera.enabled]
    out.write(f"{path}: OK\n")
    out.write(f"node: {config.node_id}\n")
    out.write(f"cameras: {len(enabled)} enabled, {len(config.cameras) - len(enabled)} disabled\n")
    for camera in config.cameras:
        state = "" if camera.enabled else " (disabled)"
        detect = f" detect_url={display_detect_url(camera)}" if camera.detect_url else ""
        out.write(
            f"  {camera.id}: {display_url(camera)}{detect} "
            f"detect_fps={camera.detect_fps:g}{state}\n"
        )
    model = config.model
    where = model.path or model.dir or "default models dir"
    out.write(f"model: {model.precision} on {model.device} ({where})\n")
    mqtt = config.mqtt
    user = f", user {mqtt.username}" if mqtt.username else ""
    tls = "yes" if mqtt.tls.enabled else "no"
    out.write(f"mqtt: {_host_port(mqtt.host, mqtt.effective_port)}, TLS {tls}{user}\n")
    metrics = config.metrics
    if metrics.enabled:
        out.write(f"metrics: http://{_host_port(metrics.host, metrics.port)}/metrics\n")
    else:
        out.write("metrics: disabled\n")
    return 0
