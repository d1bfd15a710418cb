"""What a camera reader reports: its status snapshot, its frame rates and its metrics."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import Counter, Gauge

    from edge_facedet.outputs.metrics import Metrics


class CameraState(str, enum.Enum):
    """Where a reader is in its lifetime (`enum.StrEnum` needs 3.11; we support 3.10)."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A snapshot of one reader, for health answers, MQTT availability and logs."""

    camera_id: str
    state: CameraState
    fps_in: float
    """Frames grabbed per second over the last status interval."""
    fps_out: float
    """Frames decoded and handed on per second over the last status interval."""
    last_error: str | None
    """The most recent fault, one line, credentials redacted."""
    reconnects: int
    frame_width: int | None
    frame_height: int | None


class StatusBoard:
    """A reader's current `CameraStatus`: changed by the reader's thread, read by any."""

    def __init__(self, *, camera_id: str, report: Callable[[CameraStatus], None]) -> None:
        self._report = report
        self._lock = threading.Lock()
        self._status = CameraStatus(
            camera_id=camera_id,
            state=CameraState.STARTING,
            fps_in=0.0,
            fps_out=0.0,
            last_error=None,
            reconnects=0,
            frame_width=None,
            frame_height=None,
        )

    @property
    def current(self) -> CameraStatus:
        with self._lock:
            return self._status

    def set_state(
        self,
        state: CameraState,
        *,
        last_error: str | None = None,
        reconnects: int | None = None,
        fps_in: float | None = None,
        fps_out: float | None = None,
        frame_width: int | None = None,
        frame_height: int | None = None,
    ) -> None:
        """Update the snapshot and report it (every call is a change or a rate report).

        Fields not given keep their value; the rates read 0 outside STREAMING.
        """
        streaming = state is CameraState.STREAMING
        with self._lock:
            old = self._status
            self._status = CameraStatus(
                camera_id=old.camera_id,
                state=state,
                fps_in=(fps_in if fps_in is not None else old.fps_in) if streaming else 0.0,
                fps_out=(fps_out if fps_out is not None else old.fps_out) if streaming else 0.0,
                last_error=last_error if last_error is not None else old.last_error,
                reconnects=reconnects if reconnects is not None else old.reconnects,
                frame_width=frame_width if frame_width is not None else old.frame_width,
                frame_height=frame_height if frame_height is not None else old.frame_height,
            )
            status = self._status
        self._report(status)

    def count_reconnect(self) -> None:
        """One more reconnect, reported."""
        with self._lock:
            reconnects = self._status.reconnects + 1
        self.set_state(CameraState.RECONNECTING, reconnects=reconnects)


class RateWindow:
    """Frames grabbed and handed on since the window started, as rates."""

    def __init__(self, *, now: float) -> None:
        self._start = now
        self.grabbed = 0
        self.handed = 0

    def restart(self, *, now: float, grabbed: int = 0) -> None:
        self._start = now
        self.grabbed = grabbed
        self.handed = 0

    def take_rates(self, *, now: float) -> tuple[float, float]:
        """(frames in, frames out) per second over the window, which then starts afresh."""
        elapsed = max(now - self._start, 1e-9)
        rates = (self.grabbed / elapsed, self.handed / elapsed)
        self.restart(now=now)
        return rates


@dataclass(frozen=True, slots=True)
class ReaderMetrics:
    """One camera's series of the reader's metrics, resolved once (`labels()` takes a lock)."""

    captured: Counter
    skipped: Counter
    stale: Counter
    gated: Counter
    lag: Gauge
    reconnects: Counter
    up: Gauge

    @classmethod
    def for_camera(cls, metrics: Metrics, *, camera_id: str) -> ReaderMetrics:
        """The camera's series; each exists (at 0) from now on, `camera_up` set to 0."""
        series = cls(
            captured=metrics.frames_captured.labels(camera=camera_id),
            skipped=metrics.frames_skipped.labels(camera=camera_id),
            stale=metrics.frames_stale.labels(camera=camera_id),
            gated=metrics.frames_gated.labels(camera=camera_id),
            lag=metrics.camera_lag_seconds.labels(camera=camera_id),
            reconnects=metrics.camera_reconnects.labels(camera=camera_id),
            up=metrics.camera_up.labels(camera=camera_id),
        )
        series.up.set(0)
        return series
