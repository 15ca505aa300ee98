"""Contribution weights of the uploads (server half only).

``performance`` (the brief's contribution weighting) must reward clients whose
updates are good, not clients whose validation split is tiny or holds one class,
and no self-reported number may buy a client the federation. Every number used is
a claim and is bounded before use:

1. ``n_train`` is capped at ``n_cap`` times the round's median claim.
2. The validation score is shrunk toward the round's median by its confidence
   ``m = n_val * (k_val - 1) / (C - 1)`` (``k_val`` = classes present in the split):
   ``s' = (m s + kappa median) / (m + kappa)``. A single-class split (where any
   majority-class predictor scores 1.0) gets m = 0, i.e. exactly the median score.
3. The tilt ``exp((s' - median) / tau)`` is clipped to ``[e^-1, e^1]``.
4. No client's weight exceeds ``cap`` times the mean weight (excess redistributed).

``samples`` and ``uniform`` use steps 1 and 4 only (``uniform``: 4).
The effective number of clients, ``(sum w)^2 / sum w^2``, goes into ``metrics.jsonl``.
"""
from __future__ import annotations

import numpy as np

N_CAP = 4.0          # n_train claims above 4x the median count as 4x the median
KAPPA = 20.0         # pseudo-count of the shrinkage toward the median score
TILT_CLIP = 1.0      # |(s' - median) / tau| <= 1
WEIGHT_CAP = 3.0     # no weight above 3x the mean


def cap_weights(w: np.ndarray, cap: float) -> np.ndarray:
    """Normalised weights with none above ``cap / len(w)``; the excess goes to the others pro rata."""
    w = np.asarray(w, float)
    if len(w) == 0 or w.sum() <= 0:
        return np.full(len(w), 1.0 / max(len(w), 1))
    w = w / w.sum()
    bound = min(1.0, cap / len(w))
    for _ in range(len(w)):
        over = w > bound + 1e-12
        if not over.any():
            break
        free = ~over
        excess = (w[over] - bound).sum()
        w[over] = bound
        w[free] += excess * w[free] / max(w[free].sum(), 1e-12)
    return w


def shrunk_scores(uploads: list, n_classes: int) -> np.ndarray:
    """Validation scores shrunk toward the round median by the confidence of each split."""
    s = np.array([float(u.meta["val_score"]) for u in uploads])
    n_val = np.array([max(0.0, float(u.meta.get("n_val", 0))) for u in uploads])
    k_val = np.array([min(max(float(u.meta.get("val_classes", 1)), 1.0), float(n_classes)) for u in uploads])
    m = n_val * (k_val - 1.0) / max(n_classes - 1.0, 1.0)
    med = float(np.median(s))
    return (m * s + KAPPA * med) / (m + KAPPA)


def client_weights(uploads: list, weighting: str, tau: float, n_classes: int = 2) -> np.ndarray:
    """Normalised aggregation weight per upload (sums to 1)."""
    if not uploads:
        return np.zeros(0)
    n = np.array([float(u.meta["n_train"]) for u in uploads])
    n = np.minimum(n, N_CAP * float(np.median(n)))
    if weighting == "performance":
        s = shrunk_scores(uploads, n_classes)
        tilt = np.clip((s - np.median(s)) / tau, -TILT_CLIP, TILT_CLIP)
        raw = n * np.exp(tilt)
    elif weighting == "samples":
        raw = n
    elif weighting == "uniform":
        raw = np.ones_like(n)
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    return cap_weights(raw, WEIGHT_CAP)


def effective_clients(w: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many clients the weights are worth."""
    w = np.asarray(w, float)
    return float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300)) if len(w) else 0.0
