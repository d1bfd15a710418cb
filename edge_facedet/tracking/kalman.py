"""Constant-velocity Kalman filters on face boxes, in seconds rather than frames.

The state of each box is its centre and size (cx, cy, w, h) and their velocities, as in
SORT and ByteTrack, but `predict` takes the time since the last call: cameras are detected
at 1 to 10 frames a second and frames are skipped, so a per-frame model would mistake a
skipped frame for a slow face. Process noise is continuous white acceleration (its exact
discretisation, so two predictions of 0.5 s equal one of 1 s), scaled by the box size so a
near face and a far one are equally certain relative to their size.

With independent noise per coordinate and each coordinate measured on its own, the 8x8
filter is four independent 2x2 filters (position, velocity). A camera has a few faces and
runs this for every processed frame, where numpy's per-call overhead is larger than the
arithmetic, so each track's state is plain Python floats, stepped coordinate by coordinate
(the same floating-point operations, in the same order, as the numpy arrays this replaced,
so the estimates are bit for bit the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

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


def _center_size(box: list[float]) -> list[float]:
    """x_min, y_min, x_max, y_max -> cx, cy, w, h."""
    x_min, y_min, x_max, y_max = box
    return [(x_min + x_max) / 2, (y_min + y_max) / 2, x_max - x_min, y_max - y_min]


def _rows(boxes: NDArray[np.floating]) -> list[list[float]]:
    """(K, 4) boxes as lists of Python floats (float32 to float is exact)."""
    rows: list[list[float]] = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist()
    return rows


def _indices(rows: Sequence[int] | NDArray[np.intp]) -> list[int]:
    return rows.tolist() if isinstance(rows, np.ndarray) else list(rows)


def _scales(position: list[float]) -> tuple[float, float, float, float]:
    """The size each coordinate's noise scales with: width for x and w, height for y and h."""
    width = max(position[2], _MIN_SIZE)
    height = max(position[3], _MIN_SIZE)
    return width, height, width, height


def _square(value: float) -> float:
    return value * value


class _Track:
    """One box's filter: per coordinate (cx, cy, w, h) its position, its velocity and their
    covariance [[p00, p01], [p01, p11]]."""

    __slots__ = ("p00", "p01", "p11", "position", "velocity")

    def __init__(self, box: list[float]) -> None:
        position = _center_size(box)
        self.position = position
        self.velocity = [0.0, 0.0, 0.0, 0.0]
        scales = _scales(position)
        # Squares as products, as numpy's `** 2` computes them.
        self.p00 = [_square(2 * _MEASUREMENT_STD * scale) for scale in scales]
        self.p01 = [0.0, 0.0, 0.0, 0.0]
        self.p11 = [_square(_INITIAL_VELOCITY_STD * scale) for scale in scales]

    def predict(self, dt: float) -> None:
        position, velocity, p00, p01, p11 = (
            self.position, self.velocity, self.p00, self.p01, self.p11,
        )  # fmt: skip
        dt2, dt3 = dt**2, dt**3
        for k, scale in enumerate(_scales(position)):
            q = _square(_ACCELERATION_STD * scale)
            position[k] = position[k] + dt * velocity[k]
            p00[k] = p00[k] + 2 * dt * p01[k] + dt * dt * p11[k] + q * dt3 / 3
            p01[k] = p01[k] + dt * p11[k] + q * dt2 / 2
            p11[k] = p11[k] + q * dt
        # A shrinking face extrapolated too far would turn its box inside out.
        for k in (2, 3):
            if position[k] < _MIN_SIZE:
                position[k] = _MIN_SIZE
                velocity[k] = 0.0

    def update(self, box: list[float]) -> None:
        position, velocity, p00, p01, p11 = (
            self.position, self.velocity, self.p00, self.p01, self.p11,
        )  # fmt: skip
        measured = _center_size(box)
        for k, scale in enumerate(_scales(position)):
            innovation_var = p00[k] + _square(_MEASUREMENT_STD * scale)
            gain_position = p00[k] / innovation_var
            gain_velocity = p01[k] / innovation_var
            residual = measured[k] - position[k]
            position[k] = position[k] + gain_position * residual
            velocity[k] = velocity[k] + gain_velocity * residual
            p11[k] = p11[k] - gain_velocity * p01[k]
            p01[k] = (1 - gain_position) * p01[k]
            p00[k] = (1 - gain_position) * p00[k]


class BoxFilters:
    """One filter per row: `add` and `keep` rows, `predict` all, `update` the matched ones."""

    __slots__ = ("_tracks",)

    def __init__(self) -> None:
        self._tracks: list[_Track] = []

    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def boxes(self) -> NDArray[np.float64]:
        """(N, 4) current estimates as x_min, y_min, x_max, y_max."""
        corners = []
        for track in self._tracks:
            cx, cy, width, height = track.position
            half_w, half_h = max(width, 0.0) / 2, max(height, 0.0) / 2
            corners.append((cx - half_w, cy - half_h, cx + half_w, cy + half_h))
        return np.array(corners, dtype=np.float64).reshape(-1, 4)

    @property
    def velocities(self) -> NDArray[np.float64]:
        """(N, 4) d(cx, cy, w, h)/dt in pixels per second."""
        return np.array([t.velocity for t in self._tracks], dtype=np.float64).reshape(-1, 4)

    def add(self, *, boxes: NDArray[np.floating]) -> None:
        """New rows at the end, one per box: not moving, but unsure of their speed."""
        self._tracks.extend(_Track(box) for box in _rows(boxes))

    def keep(self, *, rows: NDArray[np.bool_]) -> None:
        """Keep the rows where `rows` is True, in order; the others are gone."""
        kept = np.asarray(rows, dtype=np.bool_).tolist()
        self._tracks = [track for track, keep in zip(self._tracks, kept, strict=True) if keep]

    def predict(self, *, dt_s: float) -> None:
        """Move every estimate `dt_s` seconds ahead; zero (or a step back) changes nothing."""
        dt = max(dt_s, 0.0)
        if dt == 0.0:
            return
        for track in self._tracks:
            track.predict(dt)

    def update(
        self, *, rows: Sequence[int] | NDArray[np.intp], boxes: NDArray[np.floating]
    ) -> None:
        """Correct `rows` (distinct) with their detections (K, 4) x_min, y_min, x_max, y_max."""
        tracks = self._tracks
        for row, box in zip(_indices(rows), _rows(boxes), strict=True):
            tracks[row].update(box)

    def hold(self, *, rows: Sequence[int] | NDArray[np.intp]) -> None:
        """Stop extrapolating `rows`: a face not seen stays where and as large as it was.

        ByteTrack holds the size of its lost tracks: a size velocity measured over a few noisy
        frames would otherwise grow or shrink the box for as long as the face stays unseen.
        The position is held too: a face that walks out of the frame and comes back, or stops
        behind something, reappears near where it was last seen, while a box coasting at its
        last speed is far off-frame after a second or two (measured with tools/trackscore:
        IDF1 of a leave-and-return sequence 0.53 coasting, 0.97 held, no other sequence worse).
        """
        for row in _indices(rows):
            self._tracks[row].velocity = [0.0, 0.0, 0.0, 0.0]
