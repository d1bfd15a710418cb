"""Motion gating: which of a camera's due frames go to the detector.

A due frame goes to the detector when it shows motion, while the camera has faces in view
(its `CameraActivity`: faces in the last processed frame or open tracks), or as a recheck
once `recheck_interval_s` passed since the camera's last frame sent (a face that never
moved is still found, and the publish policy's heartbeats keep coming). Any other due frame
is gated: not converted to the network input, not detected, counted in
`edge_facedet_frames_gated_total`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_facedet.sources.motion import MotionDetector, MotionSettings

if TYPE_CHECKING:
    from edge_facedet.sources.activity import CameraActivity
    from edge_facedet.sources.source import VideoSource

__all__ = ["GateSettings", "MotionGate", "Verdict"]


class Verdict(enum.Enum):
    """What the gate decided for one due frame."""

    MOTION = "motion"
    ACTIVE = "active"
    """Faces in view (the last processed frame's faces or open tracks)."""
    RECHECK = "recheck"
    GATED = "gated"

    @property
    def sends(self) -> bool:
        return self is not Verdict.GATED


@dataclass(frozen=True, slots=True, kw_only=True)
class GateSettings:
    """One camera's motion gating (config: `motion:`)."""

    recheck_interval_s: float = 2.0
    motion: MotionSettings = field(default_factory=MotionSettings)

    def __post_init__(self) -> None:
        if self.recheck_interval_s <= 0:
            raise ValueError(f"recheck_interval_s must be > 0, got {self.recheck_interval_s}")


class MotionGate:
    """One camera's gate; used by its reader thread only."""

    def __init__(
        self, *, settings: GateSettings, activity: CameraActivity, detect_fps: float
    ) -> None:
        self._recheck_interval_s = settings.recheck_interval_s
        self._activity = activity
        self._detector = MotionDetector(settings=settings.motion, frame_interval_s=1.0 / detect_fps)
        self._last_sent_s = -math.inf

    def decide(self, *, source: VideoSource, clock_s: float) -> Verdict:
        """The verdict on the due frame `source` last grabbed, at `clock_s` on the frame
        clock; raises `SourceError` if its small grey picture cannot be made.

        Motion is measured on every due frame, sent or not, so the background stays current.
        """
        result = self._detector.detect(source.gray(height=self._detector.height_px))
        # A recalibration (most of the picture changed at once) is not motion to the
        # detector's background, but the gate cannot tell a lighting step from a person
        # close to the lens filling the view: the frame goes to the detector, which costs one
        # inference per lighting step instead of missing that person (measured: a close-up
        # passing a fixed camera recalibrated 5 due frames in a row with a face in view).
        # (A first picture is a calibration too, with nothing changed: that one is not.)
        if result.motion or (result.recalibrated and result.changed > 0):
            return Verdict.MOTION
        if self._activity.faces_in_view:
            return Verdict.ACTIVE
        if clock_s - self._last_sent_s >= self._recheck_interval_s:
            return Verdict.RECHECK
        return Verdict.GATED

    def sent(self, *, clock_s: float) -> None:
        """The frame at `clock_s` was handed to the detector: the recheck interval restarts."""
        self._last_sent_s = clock_s
