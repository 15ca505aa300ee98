"""Bounds on what a client's self-reported numbers and summaries can do (server half only).

Besides its weights, everything a client uploads is a claim the server cannot check:
``n_train``, ``n_val``, the validation scores, its public-set logits, its K-Means
centroids and their counts. Each bound here compares a client's claim with the
round's robust distribution of the same claim (its median; for logits and norms also
its MAD, scaled by 1.4826 to a standard deviation, with a floor), so it tolerates fewer
than half of the uploads being hostile, and it is a no-op for honest, similar clients:

1. Sizes (:func:`check_sizes`): an ``n_train`` claim above ``N_CAP`` x the round
   median counts as ``N_CAP`` x the median, and its client is *untrusted* this round:
   its weight is at most the heaviest trusted client's
   (:mod:`~fedmm.federated.mechanisms.contribution`), it teaches no one
   (:mod:`~fedmm.federated.mechanisms.logit_kd`) and its score is left out of the
   round medians of both.
   ``n_val`` (the confidence of the score) is bounded by ``N_CAP`` x its round median
   and by the bounded ``n_train``.
2. Public logits (:func:`consensus_distances`, :func:`upper_outliers`): a client whose
   softened public probabilities are far from the per-row median of the view's
   candidates (mean KL(consensus || client) above ``median + K_LOGIT x scale``) is not a
   teacher of that view.
3. Summaries (:func:`bounded_summaries`): a client's centroid counts and label
   histograms are scaled down to its bounded ``n_train`` (an honest client's counts sum
   to at most its training rows); centroids whose log-norm lies outside the round's
   ``median +- K_NORM x scale`` are dropped before the global K-Means.

Every exclusion or down-weighting is an :func:`event`; ``server_round`` collects a round's
events under ``robust`` in the global row of ``metrics.jsonl``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_CAP = 4.0           # size claims above 4x the round median count as 4x the median (and untrust the client)
MAD_TO_STD = 1.4826   # MAD of a normal sample x 1.4826 = its standard deviation
K_LOGIT = 4.0         # teachers: KL from the public consensus above median + 4 x scale disagrees
KL_FLOOR = 0.3        # ... with the scale at least 0.3 nats
MIN_CONSENSUS = 4     # ... checked only with at least 4 candidates (3 against 1 is a consensus; 2 against 1 is not)
K_NORM = 4.0          # centroids: log-norm outside median +- 4 x scale is dropped
LOG_NORM_FLOOR = 0.25  # ... with the scale at least 0.25 (so at least a factor e^1 either way)


def event(client: str, what: str, reason: str) -> dict:
    """One logged exclusion or down-weighting: what = weight | teacher | centroids."""
    return {"client": client, "what": what, "reason": reason}


def robust_scale(x: np.ndarray, floor: float) -> tuple[float, float]:
    """(median, max(1.4826 MAD, floor)) of ``x`` [N]."""
    x = np.asarray(x, np.float64)
    med = float(np.median(x))
    return med, max(MAD_TO_STD * float(np.median(np.abs(x - med))), floor)


@dataclass
class SizeClaims:
    """The round's bounded size claims, aligned with the uploads."""

    n_train: np.ndarray                                 # [N] bounded n_train claims
    n_val: np.ndarray                                   # [N] bounded n_val claims
    untrusted: dict[str, str] = field(default_factory=dict)   # client -> why its claims are untrusted
    events: list[dict] = field(default_factory=list)          # "weight" events of the bounds that bit


def check_sizes(uploads: list) -> SizeClaims:
    """Bound every ``n_train`` / ``n_val`` claim by ``N_CAP`` x the round median (see module docstring)."""
    names = [u.meta["client"] for u in uploads]
    n = np.array([float(u.meta["n_train"]) for u in uploads])                        # [N]
    n_val = np.array([max(0.0, float(u.meta.get("n_val", 0))) for u in uploads])      # [N]
    if not len(n):
        return SizeClaims(n, n_val)
    med = float(np.median(n))
    n_cap = N_CAP * med
    bounded = np.minimum(n, n_cap)
    val_cap = np.minimum(N_CAP * max(float(np.median(n_val)), 1.0), bounded)          # [N]
    out = SizeClaims(bounded, np.minimum(n_val, val_cap))
    for i, name in enumerate(names):
        if n[i] > n_cap:
            out.untrusted[name] = f"n_train claim {n[i]:.0f} > {N_CAP:g}x the round median {med:g}"
            out.events.append(event(name, "weight", f"{out.untrusted[name]}: counted as {n_cap:g}"))
        if n_val[i] > val_cap[i]:
            out.events.append(event(name, "weight", f"n_val claim {n_val[i]:.0f} counted as {val_cap[i]:g}"))
    return out


def consensus_distances(probs: np.ndarray) -> np.ndarray:
    """Mean over rows of KL(consensus || client) [N] in nats, for each client's probabilities
    ``probs`` [N, M, C]; the consensus is the per-row, per-class median of all N, renormalised.

    KL in this direction punishes a client that puts (almost) no mass where the consensus has
    some: a confidently wrong one, which a total variation in [0, 1] tells apart less well from
    an honest client with a skewed label distribution."""
    p = np.asarray(probs, np.float64)
    med = np.median(p, axis=0)                                        # [M, C]
    med = med / np.maximum(med.sum(-1, keepdims=True), 1e-12)
    ratio = np.log(np.maximum(med[None], 1e-12) / np.maximum(p, 1e-12))   # [N, M, C]
    return (med[None] * ratio).sum(-1).mean(-1)                       # [N]


def upper_outliers(x: np.ndarray, k: float, floor: float, min_n: int = 3) -> tuple[np.ndarray, float]:
    """(mask [N] of values above median + k x scale, that bound); nothing with fewer than ``min_n`` values."""
    x = np.asarray(x, np.float64)
    if len(x) < min_n:
        return np.zeros(len(x), bool), float("inf")
    med, scale = robust_scale(x, floor)
    bound = med + k * scale
    return x > bound, bound


def bounded_summaries(uploads: list, mod: str, allowed: dict[str, float] | None = None):
    """The ``mod`` summaries of the round after the count cap and the norm check.

    ``allowed``: client -> bound on the sum of its counts (its bounded ``n_train``; none: no cap).
    Returns (centroids [K, d], counts [K], hists [K, C], events); K counts the kept centroids.
    """
    have = [u for u in uploads if f"summary/{mod}_centroids" in u.arrays]
    cents = [u.arrays[f"summary/{mod}_centroids"] for u in have]      # each [k_i, d]
    counts = [u.arrays[f"summary/{mod}_counts"] for u in have]        # each [k_i]
    hists = [u.arrays[f"summary/{mod}_hist"] for u in have]           # each [k_i, C]
    events: list[dict] = []
    for i, u in enumerate(have):
        name, total = u.meta["client"], float(counts[i].sum())
        bound = (allowed or {}).get(name)
        if bound is not None and total > bound:
            f = bound / total
            counts[i], hists[i] = (counts[i] * f).astype(np.float32), (hists[i] * f).astype(np.float32)
            events.append(event(name, "centroids", f"{mod} counts sum {total:g} > its n_train bound {bound:g}: "
                                                   f"scaled by {f:.3g}"))
    sizes = [len(c) for c in cents]
    if sum(sizes) >= 3:
        logn = np.log(np.maximum(np.linalg.norm(np.concatenate(cents).astype(np.float64), axis=1), 1e-30))  # [K]
        med, scale = robust_scale(logn, LOG_NORM_FLOOR)
        far = np.abs(logn - med) > K_NORM * scale                     # [K]
        start = 0
        for i, u in enumerate(have):
            drop = far[start:start + sizes[i]]
            start += sizes[i]
            if drop.any():
                keep = ~drop
                cents[i], counts[i], hists[i] = cents[i][keep], counts[i][keep], hists[i][keep]
                events.append(event(u.meta["client"], "centroids",
                                    f"{int(drop.sum())} of {len(drop)} {mod} centroids dropped: norm outside "
                                    f"[{np.exp(med - K_NORM * scale):.3g}, {np.exp(med + K_NORM * scale):.3g}]"))
    if not have:
        return None, None, None, events
    return np.concatenate(cents), np.concatenate(counts), np.concatenate(hists), events
