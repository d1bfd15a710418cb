"""The detect grid: which of a camera's frames are due for detection at its `detect_fps`.

The grid is `phase + k x period` on the frame clock (a file's media clock, a live camera's
arrival clock): the frame due is the first at or after each point. The average rate is exact
whatever the arrival jitter, a gap (reconnect, loop, slow consumer) resumes on the next point
instead of bursting, and cameras given different phases spread their due frames over the
period instead of all presenting one at the same moment.
"""

from __future__ import annotations

import math

_DUE_EPSILON_S = 1e-6
"""Absorbs float rounding when the media clock sums frame intervals (5 x 0.04 < 0.2)."""


class DetectGrid:
    """Tells, frame by frame, whether a frame is the first at or after a point of the grid."""

    def __init__(self, *, detect_fps: float, phase: float = 0.0) -> None:
        if detect_fps <= 0:
            raise ValueError(f"detect_fps must be > 0, got {detect_fps}")
        if not 0.0 <= phase < 1.0:
            raise ValueError(f"phase must be in [0, 1), got {phase}")
        self._period_s = 1.0 / detect_fps
        self._phase_s = phase * self._period_s
        self._next_due_s = -math.inf  # the first frame is due

    def is_due(self, clock_s: float) -> bool:
        """Whether the frame at `clock_s` is due; frames are asked about in clock order."""
        if clock_s + _DUE_EPSILON_S < self._next_due_s:
            return False
        period = self._period_s
        points_passed = math.floor((clock_s - self._phase_s) / period + _DUE_EPSILON_S)
        self._next_due_s = self._phase_s + (points_passed + 1) * period
        return True
