"""The tracker's own assignment solver against SciPy's (SciPy is in the test extra only)."""

from __future__ import annotations

import numpy as np
import pytest

# scipy ships no type information unless scipy-stubs is installed; either way passes.
from scipy.optimize import linear_sum_assignment as reference  # type: ignore[import-untyped, unused-ignore]

from edge_facedet.tracking.assignment import linear_sum_assignment


@pytest.mark.parametrize("maximize", [False, True])
def test_totals_equal_scipy_on_random_rectangular_matrices(maximize: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(600):
        shape = tuple(int(n) for n in rng.integers(1, 9, size=2))
        # Ties are common in the tracker (zeros for invalid pairs): draw from few values too.
        matrix = (
            rng.choice([0.0, 0.25, 0.5, 1.0], size=shape)
            if rng.random() < 0.3
            else (rng.random(shape))
        )
        rows, cols = linear_sum_assignment(matrix, maximize=maximize)
        want_rows, want_cols = reference(matrix, maximize=maximize)
        assert len(rows) == len(want_rows) == min(shape)
        assert list(rows) == sorted(rows)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert matrix[rows, cols].sum() == pytest.approx(matrix[want_rows, want_cols].sum())


def test_empty_and_bad_input() -> None:
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.size == cols.size == 0
    with pytest.raises(ValueError, match="not finite"):
        linear_sum_assignment(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))
