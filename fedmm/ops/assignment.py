"""Linear assignment (docs/ARCHITECTURE.md §8): ``fedmm._C`` Jonker-Volgenant fast path, scipy fallback.

Both backends follow :func:`scipy.optimize.linear_sum_assignment`: rectangular matrices
either way, ``inf`` (``-inf`` when maximizing) marks a forbidden pair, NaN or a wrong-signed
infinity raises ``ValueError("... invalid numeric entries")`` and a matrix whose forbidden
pairs leave no complete assignment raises ``ValueError("cost matrix is infeasible")``.
"""
from __future__ import annotations

import functools
import logging
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment as _scipy_lsa

from fedmm.ops._dispatch import resolve_backend

log = logging.getLogger("fedmm.ops")

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=1)
def extension_unavailable() -> str | None:
    """``None`` if the compiled core ``fedmm._C`` imports, else the reason (shared probe)."""
    try:
        from fedmm import _C  # noqa: F401
    except ImportError as exc:
        return f"fedmm._C could not be imported ({exc})"
    return None


@functools.lru_cache(maxsize=None)
def warn_fallback_once(op: str, fallback: str) -> None:
    """Log, once per op, that ``auto`` fell back because the compiled core is missing."""
    log.warning("fedmm.ops.%s: %s; using the %s fallback", op, extension_unavailable(), fallback)


@functools.lru_cache(maxsize=None)
def _resolve(op: str, backend: str) -> str:
    """Backend for (op, requested), memoised: the extension's presence cannot change."""
    chosen = resolve_backend(op, backend, {"cpp": extension_unavailable, "scipy": lambda: None})
    if backend == "auto" and chosen != "cpp":
        warn_fallback_once(op, chosen)
    return chosen


@functools.lru_cache(maxsize=1)
def _core():
    from fedmm import _C

    return _C


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
        return _core().linear_sum_assignment(cost, bool(maximize))
    r, c = _scipy_lsa(cost, maximize=maximize)
    return r.astype(np.int64, copy=False), c.astype(np.int64, copy=False)


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
        return _core().linear_sum_assignment_batch(mats, bool(maximize), int(n_threads or 0))
    out = []
    for b, c in enumerate(items):
        try:
            r, col = _scipy_lsa(c, maximize=maximize)
        except ValueError as exc:
            raise ValueError(f"{what}: instance {b}: {exc}") from exc
        out.append((r.astype(np.int64, copy=False), col.astype(np.int64, copy=False)))
    return out
