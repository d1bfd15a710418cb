"""The cameras' settings: `CameraSettings` (also given once under `defaults`) and `CameraConfig`.

URL forms are checked against the one scheme table, `edge_facedet.sources.urls`; a URL is
never quoted in a message, as it may hold a password. `Decoder` is imported from
`edge_facedet.sources.source`, the light module that `edge_facedet.sources.decoders`
re-exports it from, so loading a config (`check-config`) imports neither OpenCV nor PyAV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_facedet.config.base import (
    CONTROL_CHARS,
    ID_PATTERN,
    MIN_DELAY_S,
    MIN_RATE_HZ,
    MIN_TIMEOUT_S,
    StrictModel,
)
from edge_facedet.config.errors import field_error
from edge_facedet.config.mainstream import MainStreamConfig
from edge_facedet.config.motion import MotionConfig
from edge_facedet.config.publish import PublishConfig, PublishPolicy
from edge_facedet.config.secrets import SecretSource
from edge_facedet.config.snapshots import SnapshotConfig
from edge_facedet.config.tracking import TrackingConfig
from edge_facedet.sources.source import Decoder
from edge_facedet.sources.urls import SCHEMES, SourceKind, scheme_of, source_kind


class Roi(StrictModel):
    """Region of interest in normalised coordinates; faces whose centre is outside are dropped."""

    x_min: float = Field(ge=0.0, le=1.0, description="Left edge, 0..1.")
    y_min: float = Field(ge=0.0, le=1.0, description="Top edge, 0..1.")
    x_max: float = Field(ge=0.0, le=1.0, description="Right edge, 0..1.")
    y_max: float = Field(ge=0.0, le=1.0, description="Bottom edge, 0..1.")

    @model_validator(mode="after")
    def _ordered(self) -> Roi:
        if not self.x_min < self.x_max:
            raise field_error("x_max", "roi needs x_min < x_max")
        if not self.y_min < self.y_max:
            raise field_error("y_max", "roi needs y_min < y_max")
        return self


class CameraSettings(StrictModel):
    """Per-camera settings that may also be given once under `defaults`."""

    enabled: bool = Field(default=True, description="Read this camera.")
    detect_fps: float = Field(
        default=5.0,
        ge=MIN_RATE_HZ,
        le=120,
        description="Frames per second sent to the detector (0.01: one frame per 100 s).",
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
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="Face tracks and events; a camera's keys are merged over `defaults.tracking`.",
    )
    snapshots: SnapshotConfig = Field(
        default_factory=SnapshotConfig,
        description="Pictures of each track's best face (off by default); a camera's keys are "
        "merged over `defaults.snapshots`.",
    )
    motion: MotionConfig = Field(
        default_factory=MotionConfig,
        description="Motion gating: skip the detector while the scene is still; a camera's "
        "keys are merged over `defaults.motion`.",
    )
    main_stream: MainStreamConfig = Field(
        default_factory=MainStreamConfig,
        description="Snapshots from the main stream `url` while detecting on `detect_url`; a "
        "camera's keys are merged over `defaults.main_stream`.",
    )
    loop: bool = Field(default=False, description="Files only: start again at the end.")
    realtime: bool = Field(
        default=True,
        description="Files only: true plays the file at its frame rate like a live camera "
        "(frames the detector cannot take in time are dropped); false reads it as fast as the "
        "detector takes frames and drops none, to analyse a recording.",
    )
    open_timeout_s: float = Field(
        default=10.0, ge=MIN_TIMEOUT_S, le=300, description="Stream open timeout (0.1..300 s)."
    )
    read_timeout_s: float = Field(
        default=10.0, ge=MIN_TIMEOUT_S, le=300, description="Frame read timeout (0.1..300 s)."
    )
    stall_timeout_s: float = Field(
        default=10.0,
        ge=MIN_TIMEOUT_S,
        le=300,
        description="No frame for this long means reconnect (0.1..300 s).",
    )
    reconnect_initial_s: float = Field(
        default=1.0,
        ge=MIN_DELAY_S,
        le=300,
        description="First reconnect delay cap (full jitter; 0.01..300 s).",
    )
    reconnect_max_s: float = Field(
        default=30.0,
        ge=MIN_DELAY_S,
        le=3600,
        description="Largest reconnect delay (full jitter; 0.01..3600 s).",
    )
    decoder_threads: int = Field(
        default=1, ge=0, le=16, description="FFmpeg decoder threads per camera (0: FFmpeg's)."
    )
    decoder: Decoder = Field(
        default=Decoder.OPENCV,
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
        description="decoder pyav: skip H.264/HEVC deblocking, for less decoding CPU (see "
        "docs/benchmarks.md, decoders); frames are slightly blockier than a full decode.",
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
        ge=MIN_DELAY_S,
        le=3600,
        description="RTSP, RTMP, UDP and TCP streams: due frames read more than this many "
        "seconds behind the stream (by its timestamps) are decoded but not detected, so a host "
        "that decodes slower than its cameras send catches up instead of publishing ever older "
        "detections. Counted in edge_facedet_frames_stale_total.",
    )

    @model_validator(mode="after")
    def _tracking_consistent(self) -> CameraSettings:
        if self.tracking.low_confidence > self.confidence_threshold:
            raise field_error("tracking.low_confidence", "must be <= confidence_threshold")
        if self.snapshots.enabled and not self.tracking.enabled:
            raise field_error(
                "snapshots.mode", "snapshots are of each track's best face: needs tracking"
            )
        if self.publish.policy is PublishPolicy.OFF and not self.tracking.enabled:
            raise field_error(
                "publish.policy", "off with tracking disabled: the camera would publish nothing"
            )
        return self

    @model_validator(mode="after")
    def _rechecks_carry_heartbeats(self) -> CameraSettings:
        # A gated camera's still scene reaches the publish policy only through rechecks, so
        # on_change heartbeats can come no more often than they do.
        if (
            self.motion.enabled
            and self.publish.policy is PublishPolicy.ON_CHANGE
            and self.motion.recheck_interval_s > self.publish.heartbeat_s
        ):
            raise field_error(
                "motion.recheck_interval_s",
                "must be <= publish.heartbeat_s with policy on_change (rechecks carry the "
                "heartbeats while the scene is still)",
            )
        return self

    @model_validator(mode="after")
    def _reconnect_order(self) -> CameraSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise field_error("reconnect_max_s", "must be >= reconnect_initial_s")
        return self


def _is_relative_file(url: str) -> bool:
    """A camera URL that names a file relative to the config file (not a URL or device)."""
    return not (scheme_of(url) or url.startswith("/") or url.isdigit())


class CameraConfig(CameraSettings):
    """One camera. Any setting not given here comes from `defaults`."""

    id: str = Field(
        pattern=ID_PATTERN,
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
    cost: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="What this camera costs the shard that runs it, in 720p main-stream "
        "cameras at detect_fps 5; used to balance shards. Default: estimated from detect_url, "
        "detect_fps and the decoder options (edge_facedet/sharding.py).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        # Shown in logs and Home Assistant; a control character there only ever hides text.
        if name is not None and CONTROL_CHARS.search(name):
            raise ValueError("name cannot contain control characters")
        return name

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
        if CONTROL_CHARS.search(url):
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
            raise field_error(
                "realtime", "false applies to files only (a live source cannot be read ahead)"
            )
        return self

    @model_validator(mode="after")
    def _pyav_reads_no_devices(self) -> CameraConfig:
        if (
            self.decoder is Decoder.PYAV
            and source_kind(self.detect_url or self.url) is SourceKind.DEVICE
        ):
            raise field_error("decoder", "pyav reads streams and files, not V4L2 devices")
        return self

    @model_validator(mode="after")
    def _partial_decoding_needs_pyav(self) -> CameraConfig:
        # Checked on the camera, after defaults are merged: `defaults` may set one half.
        if self.decoder is not Decoder.PYAV:
            for field in ("keyframes_only", "skip_loop_filter"):
                if getattr(self, field):
                    raise field_error(field, "needs decoder: pyav")
        if (
            self.keyframes_only
            and source_kind(self.detect_url or self.url) is not SourceKind.NETWORK
        ):
            raise field_error("keyframes_only", "applies to network streams, not files")
        return self

    @model_validator(mode="after")
    def _credentials(self) -> CameraConfig:
        if self.password is not None and self.username is None:
            raise field_error("password", "password is set but username is not")
        if self.username is None:
            return self
        if CONTROL_CHARS.search(self.username):
            raise field_error("username", "cannot contain control characters")
        # The substream is the same camera: the credentials go into both URLs.
        for url in (self.url, self.detect_url):
            if url is None:
                continue
            if scheme_of(url) is None or source_kind(url) is not SourceKind.NETWORK:
                raise field_error("username", "only network URLs (rtsp://, http://, ...) take one")
            if "@" in urlsplit(url).netloc:
                raise field_error(
                    "username", "the URL already contains credentials; give them in one place"
                )
        return self
