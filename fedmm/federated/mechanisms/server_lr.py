"""Server learning rate (server half only; FedOpt's server step with plain SGD, Reddi et al. 2021).

A round moves the global weights by the weighted mean of the clients' updates
``delta = aggregate - broadcast``; averaging many clients' few local steps gives a short,
low-noise step, so a model trained from scratch over a handful of rounds stays far from
converged (the image encoder most). With server learning rate ``eta`` the server takes
``broadcast + eta * delta`` instead (``eta = 1``: FedAvg). BatchNorm running statistics
are statistics, not weights: they are averaged, never extrapolated.
"""
from __future__ import annotations

import numpy as np

STATISTICS = (".running_mean", ".running_var", ".num_batches_tracked")


def enabled(lr: float) -> bool:
    return float(lr) != 1.0


def server_step(old: dict[str, np.ndarray], new: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
    """``old + lr * (new - old)`` for every weight that changed (float64 arithmetic, float32 out)."""
    out = dict(new)
    for k, v in new.items():
        if k in old and not k.endswith(STATISTICS) and v.dtype.kind == "f":
            o = old[k].astype(np.float64)
            out[k] = (o + lr * (v.astype(np.float64) - o)).astype(v.dtype)
    return out
