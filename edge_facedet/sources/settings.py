"""What a camera reader reads and the rules it reads by, as value objects.

`ReaderSettings` is everything a `CameraReader` needs to know about its camera; it is built
from the camera's config by `ReaderSettings.from_camera`, so the config's field names are
mapped to the reader in one place. The timeouts and the reconnect policy are values of
their own, as httpx's `Timeout` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_facedet.backoff import Backoff
from edge_facedet.sources.decoders import DecodeOptions, Decoder
from edge_facedet.sources.gate import GateSettings
from edge_facedet.sources.motion import MotionSettings
from edge_facedet.sources.urls import SourceKind, source_kind

if TYPE_CHECKING:
    from edge_facedet.config import CameraConfig
    from edge_facedet.sources.activity import CameraActivity


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTimeouts:
    """How long a reader waits on its source before calling it a fault, in seconds."""

    open_s: float = 10.0
    """Opening the source (the probe's connect and the decoder's open)."""
    read_s: float = 10.0
    """One read from the source (FFmpeg's read and socket timeouts)."""
    stall_s: float = 10.0
    """A grab that returns a frame later than this is a stall: the reader reconnects."""

    def __post_init__(self) -> None:
        for name in ("open_s", "read_s", "stall_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """Capped full-jitter backoff between a fault and the next open, in seconds."""

    initial_s: float = 1.0
    """The first delay's cap; each attempt doubles it."""
    max_s: float = 30.0
    """The largest cap."""

    def __post_init__(self) -> None:
        Backoff(base=self.initial_s, cap=self.max_s)  # the same checks, in one place

    def backoff(self) -> Backoff:
        """A fresh backoff for one reader."""
        return Backoff(base=self.initial_s, cap=self.max_s)

    def gives_up(self, *, attempts: int) -> bool:
        """Whether a reader that has reconnected `attempts` times in a row should fail instead.

        Never: a camera that is down is retried until it is back, at the capped delay.
        """
        del attempts
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderSettings:
    """One camera reader's settings."""

    camera_id: str
    url: str = field(repr=False)  # may hold a password
    """The URL the reader opens, credentials included."""
    detect_fps: float
    input_size: tuple[int, int]
    """The network input (width, height) due frames are resized to."""
    detect_phase: float = 0.0
    """Where in the detect period this camera's due frames fall, in [0, 1)."""
    loop: bool = False
    """Files: start again at the end instead of stopping."""
    realtime: bool = True
    """Files: read at the file's frame rate (True) or as fast as the consumer takes frames."""
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    nice: int = 0
    """Niceness added to the reader's thread (Linux)."""
    max_lag_s: float = 0.5
    """Live streams: due frames read further behind the stream are not detected."""
    keep_picture: bool = False
    """Hand each frame on with its full-resolution picture (`Frame.picture`), for snapshots;
    off, a reader keeps nothing beyond the network input."""
    gate: GateSettings | None = None
    """Motion gating (edge_facedet.sources.gate); None: every due frame goes to the detector."""
    activity: CameraActivity | None = field(default=None, repr=False, compare=False)
    """The camera's "faces in view" flag the result pipeline keeps (shared, not a value:
    the one mutable object here); None: never set, so only motion and rechecks send frames."""
    timeouts: StreamTimeouts = StreamTimeouts()
    reconnect: ReconnectPolicy = ReconnectPolicy()

    def __post_init__(self) -> None:
        prefix = f"camera {self.camera_id}:"
        if self.detect_fps <= 0:
            raise ValueError(f"{prefix} detect_fps must be > 0, got {self.detect_fps}")
        if not 0.0 <= self.detect_phase < 1.0:
            raise ValueError(f"{prefix} detect_phase must be in [0, 1), got {self.detect_phase}")
        if self.max_lag_s <= 0:
            raise ValueError(f"{prefix} max_lag_s must be > 0, got {self.max_lag_s}")
        if self.input_size[0] <= 0 or self.input_size[1] <= 0:
            raise ValueError(f"{prefix} input_size must be positive, got {self.input_size}")

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.url)

    @classmethod
    def from_camera(
        cls,
        camera: CameraConfig,
        *,
        url: str,
        input_size: tuple[int, int],
        detect_phase: float = 0.0,
        activity: CameraActivity | None = None,
    ) -> ReaderSettings:
        """The settings of `camera`'s reader, opening `url` (its detect URL with credentials
        filled in) and resizing to the detector's `input_size`; `activity` is the camera's
        flag from the result pipeline, for motion gating."""
        return cls(
            camera_id=camera.id,
            url=url,
            detect_fps=camera.detect_fps,
            input_size=input_size,
            detect_phase=detect_phase,
            loop=camera.loop,
            realtime=camera.realtime,
            decode=DecodeOptions(
                decoder=Decoder(camera.decoder),
                threads=camera.decoder_threads,
                keyframes_only=camera.keyframes_only,
                skip_loop_filter=camera.skip_loop_filter,
            ),
            nice=camera.reader_nice,
            max_lag_s=camera.max_lag_s,
            keep_picture=camera.snapshots.enabled,
            gate=_gate_settings(camera),
            activity=activity,
            timeouts=StreamTimeouts(
                open_s=camera.open_timeout_s,
                read_s=camera.read_timeout_s,
                stall_s=camera.stall_timeout_s,
            ),
            reconnect=ReconnectPolicy(
                initial_s=camera.reconnect_initial_s, max_s=camera.reconnect_max_s
            ),
        )


def _gate_settings(camera: CameraConfig) -> GateSettings | None:
    """The camera's `motion:` section as the reader's gate settings; None when it is off."""
    motion = camera.motion
    if not motion.enabled:
        return None
    roi = camera.roi
    return GateSettings(
        recheck_interval_s=motion.recheck_interval_s,
        motion=MotionSettings(
            threshold=motion.threshold,
            min_area=motion.min_area,
            recalibrate_area=motion.recalibrate_area,
            background_s=motion.background_s,
            height_px=motion.height_px,
            roi=None if roi is None else (roi.x_min, roi.y_min, roi.x_max, roi.y_max),
            masks=tuple(tuple(polygon) for polygon in motion.masks),
        ),
    )
