"""Linear assignment (docs/ARCHITECTURE.md §8): ``fedmm._C`` Jonker-Volgenant fast path, scipy fallback.

Both backends follow :func:`scipy.optimize.linear_sum_assignment`: rectangular matrices
either way, ``inf`` (``-inf`` when maximizing) marks a forbidden pair, NaN or a wrong-signed
infinity raises ``ValueError("... invalid numeric entries")`` and a matrix whose forbidden
pairs leave no complete assignment raises ``ValueError("cost matrix is infeasible")``.
The scipy reference is :mod:`fedmm.ops.assignment.reference`.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from fedmm.ops.assignment.reference import linear_sum_assignment_batch_reference, linear_sum_assignment_reference
from fedmm.ops.backend import core, extension_unavailable, resolve_compiled

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=None)
def _resolve(op: str, backend: str) -> str:
    """Backend for (op, requested), memoised: the extension's presence cannot change."""
    return resolve_compiled(op, backend, "scipy", extension_unavailable)


def _as_cost_matrix(cost, what: str = "linear_sum_assignment") -> np.ndarray:
    """View ``cost`` as a 2-D float32/float64 array (converting other dtypes to float64)."""
    cost = np.asarray(cost)
    if cost.ndim != 2:
        raise ValueError(f"{what}: expected a matrix (2-D array), got a {cost.ndim}-D array")
    if not (cost.dtype.char in "fd" and cost.dtype.isnative):
        cost = cost.astype(np.float64, casting="same_kind")  # TypeError for strings etc.
    return cost


def linear_sum_assignment(cost, maximize: bool = False, backend: str = "auto"):
    """Solve the rectangular linear assignment problem (scipy's conventions).

    cost: [rows, cols] array-like (float32/float64 are read in place, other numeric dtypes
    converted to float64). Returns ``(row_ind, col_ind)``, int64 arrays of length
    ``min(rows, cols)`` with ``row_ind`` ascending, minimising (or with ``maximize``,
    maximising) ``cost[row_ind, col_ind].sum()``. ``backend``: auto | cpp | scipy.
    """
    cost = _as_cost_matrix(cost)
    if _resolve("linear_sum_assignment", backend) == "cpp":
        return core().linear_sum_assignment(cost, bool(maximize))
    return linear_sum_assignment_reference(cost, maximize)


def linear_sum_assignment_batch(costs, maximize: bool = False, backend: str = "auto",
                                n_threads: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Solve many assignment problems; the ``cpp`` backend spreads them over threads.

    costs: a 3-D array [B, rows, cols] or a sequence of 2-D matrices (shapes may differ).
    Returns a list of B ``(row_ind, col_ind)`` pairs as :func:`linear_sum_assignment` would;
    an invalid or infeasible instance raises ``ValueError`` naming its index.
    ``n_threads``: worker threads (default: all cores).
    """
    what = "linear_sum_assignment_batch"
    if isinstance(costs, np.ndarray) and costs.ndim == 3:
        mats: np.ndarray | Sequence[np.ndarray] = (
            costs if costs.dtype in _FLOATS else costs.astype(np.float64, casting="same_kind"))
        items = list(mats)
    else:
        items = [_as_cost_matrix(c, f"{what}: instance {b}") for b, c in enumerate(costs)]
        mats = items
    if _resolve(what, backend) == "cpp":
        return core().linear_sum_assignment_batch(mats, bool(maximize), int(n_threads or 0))
    return linear_sum_assignment_batch_reference(items, maximize)
