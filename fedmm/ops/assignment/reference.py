"""scipy reference of the assignment ops: the ``scipy`` backend and test oracle.

:func:`scipy.optimize.linear_sum_assignment` with the index arrays as int64, and per
instance of a batch, with the failing instance's index in the error.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_linear_sum_assignment


def linear_sum_assignment_reference(cost: np.ndarray, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(row_ind, col_ind)`` int64 of the optimal assignment of ``cost`` [rows, cols]."""
    r, c = scipy_linear_sum_assignment(cost, maximize=maximize)
    return r.astype(np.int64, copy=False), c.astype(np.int64, copy=False)


def linear_sum_assignment_batch_reference(items, maximize: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`linear_sum_assignment_reference` of each matrix in ``items``; a failure names its index."""
    out = []
    for b, c in enumerate(items):
        try:
            out.append(linear_sum_assignment_reference(c, maximize))
        except ValueError as exc:
            raise ValueError(f"linear_sum_assignment_batch: instance {b}: {exc}") from exc
    return out
