"""The optimal assignment of a small rectangular matrix (the Hungarian method).

A camera's matrices are tracks x faces, a handful each way, so an exact O(n^2 m) shortest
augmenting path solver in numpy is fast enough, and it spares the service SciPy's import:
`scipy.optimize` costs about 38 MB of resident memory per process (docs/benchmarks.md,
"Memory") for this one function. tests/test_assignment.py checks it against SciPy's
`linear_sum_assignment` (SciPy stays in the test extra for that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["linear_sum_assignment"]


def linear_sum_assignment(
    matrix: NDArray[np.floating], *, maximize: bool = False
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns of the assignment with the least (or largest) total, as SciPy's
    function of the same name returns them: one pair per row of the shorter side, rows
    ascending. Entries must be finite."""
    cost = np.asarray(matrix, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("the matrix has entries that are not finite")
    if maximize:
        cost = -cost
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    if cost.shape[0] == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    owner = _solve(cost)  # owner[j]: the row (1-based) given column j, 0 if none
    cols = np.flatnonzero(owner[1:]).astype(np.intp)
    rows = (owner[1:][cols] - 1).astype(np.intp)
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def _solve(cost: NDArray[np.float64]) -> NDArray[np.intp]:
    """Shortest augmenting paths with potentials, one row at a time (rows <= columns).

    Index 0 is a virtual column, as in the textbook form; `u`, `v` are the row and column
    potentials, `owner[j]` the row holding column j, `way[j]` the column before j on the
    current path. Each row's search is vectorised over the columns.
    """
    rows_n, cols_n = cost.shape
    padded = np.zeros((rows_n + 1, cols_n + 1))
    padded[1:, 1:] = cost
    u = np.zeros(rows_n + 1)
    v = np.zeros(cols_n + 1)
    owner = np.zeros(cols_n + 1, dtype=np.intp)
    way = np.zeros(cols_n + 1, dtype=np.intp)
    for row in range(1, rows_n + 1):
        owner[0] = row
        column = 0
        slack = np.full(cols_n + 1, np.inf)
        used = np.zeros(cols_n + 1, dtype=bool)
        while True:
            used[column] = True
            current = owner[column]
            reduced = padded[current] - u[current] - v
            better = ~used & (reduced < slack)
            slack[better] = reduced[better]
            way[better] = column
            free = np.where(used, np.inf, slack)
            free[0] = np.inf
            nearest = int(np.argmin(free))
            delta = free[nearest]
            u[owner[used]] += delta
            v[used] -= delta
            slack[~used] -= delta
            column = nearest
            if owner[column] == 0:
                break
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    return owner
