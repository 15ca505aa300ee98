"""Linear assignment (DESIGN §8): ``fedmm._C`` fast path, scipy fallback."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment as _scipy_lsa

from fedmm.ops._dispatch import resolve_backend


def linear_sum_assignment(cost, maximize: bool = False, backend: str = "auto"):
    """Solve the rectangular linear assignment problem (scipy's conventions).

    Returns ``(row_ind, col_ind)`` with ``row_ind`` sorted.
    """
    cost = np.asarray(cost)
    resolve_backend("linear_sum_assignment", backend, {"scipy": lambda: None})
    return _scipy_lsa(cost, maximize=maximize)
