"""Constant-velocity Kalman filters on face boxes, in seconds rather than frames.

The state of each box is its centre and size (cx, cy, w, h) and their velocities, as in
SORT and ByteTrack, but `predict` takes the time since the last call: cameras are detected
at 1 to 10 frames a second and frames are skipped, so a per-frame model would mistake a
skipped frame for a slow face. Process noise is continuous white acceleration (its exact
discretisation, so two predictions of 0.5 s equal one of 1 s), scaled by the box size so a
near face and a far one are equally certain relative to their size.

With independent noise per coordinate and each coordinate measured on its own, the 8x8
filter is four independent 2x2 filters (position, velocity). All of a camera's tracks are
kept as rows of (N, 4) arrays, so a step is a few elementwise operations for all of them
instead of 8x8 matrix products per track.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["BoxFilters"]

_MEASUREMENT_STD = 0.05
"""A detector's box jitter, as a fraction of the box size (ByteTrack's 1/20)."""
_ACCELERATION_STD = 1.0
"""How fast a face changes speed: box sizes per second, per second (a random walk)."""
_INITIAL_VELOCITY_STD = 2.0
"""A new face's speed is unknown: up to a couple of box sizes per second, either way.

Wide, so the second detection sets the velocity almost on its own (few frames at 1/s).
"""
_MIN_SIZE = 1e-6
"""Noise is scaled by size; a degenerate box must not make it zero (division by zero)."""


def _center_size(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    """(K, 4) x_min, y_min, x_max, y_max -> (K, 4) cx, cy, w, h."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)


def _scale(position: NDArray[np.float64]) -> NDArray[np.float64]:
    """The size each coordinate's noise scales with: width for x and w, height for y and h."""
    return np.maximum(position[:, [2, 3, 2, 3]], _MIN_SIZE)


class BoxFilters:
    """One filter per row: `add` and `keep` rows, `predict` all, `update` the matched ones."""

    __slots__ = ("_p00", "_p01", "_p11", "_position", "_velocity")

    def __init__(self) -> None:
        # Covariance per coordinate [[p00, p01], [p01, p11]] (position, velocity).
        self._position = np.empty((0, 4), dtype=np.float64)
        self._velocity = np.empty((0, 4), dtype=np.float64)
        self._p00 = np.empty((0, 4), dtype=np.float64)
        self._p01 = np.empty((0, 4), dtype=np.float64)
        self._p11 = np.empty((0, 4), dtype=np.float64)

    def __len__(self) -> int:
        return int(self._position.shape[0])

    @property
    def boxes(self) -> NDArray[np.float64]:
        """(N, 4) current estimates as x_min, y_min, x_max, y_max."""
        half = np.maximum(self._position[:, 2:], 0.0) / 2
        centre = self._position[:, :2]
        return np.concatenate([centre - half, centre + half], axis=1)

    @property
    def velocities(self) -> NDArray[np.float64]:
        """(N, 4) d(cx, cy, w, h)/dt in pixels per second."""
        return self._velocity.copy()

    def add(self, *, boxes: NDArray[np.floating]) -> None:
        """New rows at the end, one per box: not moving, but unsure of their speed."""
        position = _center_size(boxes)
        scale = _scale(position)
        self._position = np.concatenate([self._position, position])
        self._velocity = np.concatenate([self._velocity, np.zeros_like(position)])
        self._p00 = np.concatenate([self._p00, (2 * _MEASUREMENT_STD * scale) ** 2])
        self._p01 = np.concatenate([self._p01, np.zeros_like(position)])
        self._p11 = np.concatenate([self._p11, (_INITIAL_VELOCITY_STD * scale) ** 2])

    def keep(self, *, rows: NDArray[np.bool_]) -> None:
        """Keep the rows where `rows` is True, in order; the others are gone."""
        self._position = self._position[rows]
        self._velocity = self._velocity[rows]
        self._p00 = self._p00[rows]
        self._p01 = self._p01[rows]
        self._p11 = self._p11[rows]

    def predict(self, *, dt_s: float) -> None:
        """Move every estimate `dt_s` seconds ahead; zero (or a step back) changes nothing."""
        dt = max(dt_s, 0.0)
        if dt == 0.0 or not len(self):
            return
        q = (_ACCELERATION_STD * _scale(self._position)) ** 2
        self._position = self._position + dt * self._velocity
        self._p00 = self._p00 + 2 * dt * self._p01 + dt * dt * self._p11 + q * dt**3 / 3
        self._p01 = self._p01 + dt * self._p11 + q * dt**2 / 2
        self._p11 = self._p11 + q * dt
        # A shrinking face extrapolated too far would turn its box inside out.
        shrunk = self._position[:, 2:] < _MIN_SIZE
        if shrunk.any():
            self._position[:, 2:] = np.maximum(self._position[:, 2:], _MIN_SIZE)
            self._velocity[:, 2:][shrunk] = 0.0

    def update(self, *, rows: NDArray[np.intp], boxes: NDArray[np.floating]) -> None:
        """Correct `rows` with their detections (K, 4) x_min, y_min, x_max, y_max."""
        if not len(rows):
            return
        position, p00, p01 = self._position[rows], self._p00[rows], self._p01[rows]
        innovation_var = p00 + (_MEASUREMENT_STD * _scale(position)) ** 2
        gain_position = p00 / innovation_var
        gain_velocity = p01 / innovation_var
        residual = _center_size(boxes) - position
        self._position[rows] = position + gain_position * residual
        self._velocity[rows] += gain_velocity * residual
        self._p11[rows] -= gain_velocity * p01
        self._p01[rows] = (1 - gain_position) * p01
        self._p00[rows] = (1 - gain_position) * p00

    def hold(self, *, rows: NDArray[np.intp]) -> None:
        """Stop extrapolating `rows`: a face not seen stays where and as large as it was.

        ByteTrack holds the size of its lost tracks: a size velocity measured over a few noisy
        frames would otherwise grow or shrink the box for as long as the face stays unseen.
        The position is held too: a face that walks out of the frame and comes back, or stops
        behind something, reappears near where it was last seen, while a box coasting at its
        last speed is far off-frame after a second or two (measured with tools/trackscore:
        IDF1 of a leave-and-return sequence 0.53 coasting, 0.97 held, no other sequence worse).
        """
        self._velocity[rows, :] = 0.0
