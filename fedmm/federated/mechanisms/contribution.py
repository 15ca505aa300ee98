"""Contribution weights of the uploads (server half only).

``performance`` (the brief's contribution weighting) must reward clients whose
updates are good, not clients whose validation split is tiny or holds one class,
and no self-reported number may buy a client the federation. Every number used is
a claim and is bounded before use (:mod:`~fedmm.federated.mechanisms.claims`):

1. ``n_train`` is capped at ``N_CAP`` times the round's median claim; a client above
   the cap is *untrusted* this round. ``n_val`` is capped at ``N_CAP`` times its median
   and at the bounded ``n_train``.
2. The validation score is shrunk toward the median of the trusted clients' scores by
   its confidence ``m = n_val * (k_val - 1) / (C - 1)`` (``k_val`` = classes present in
   the split): ``s' = (m s + kappa median) / (m + kappa)``. A single-class split (where
   any majority-class predictor scores 1.0) gets m = 0, i.e. exactly the median score.
3. The tilt ``exp((s' - median') / tau)`` is clipped to ``[e^-1, e^1]`` (median' over
   the trusted clients' ``s'``).
4. An untrusted client weighs at most the heaviest trusted client, so a claims
   attacker (in a round where fewer than half the clients lie) gets at most the
   weight of the largest honest client.
5. No client's weight exceeds ``cap`` times the mean weight (excess redistributed).

``samples`` uses steps 1, 4 and 5, ``uniform`` step 5 only. Every bound that bites is
an event (:func:`~fedmm.federated.mechanisms.claims.event`, what = ``weight``) for
``metrics.jsonl``, and so is the effective number of clients, ``(sum w)^2 / sum w^2``.
"""
from __future__ import annotations

import numpy as np

from fedmm.federated.mechanisms.claims import SizeClaims, check_sizes, event

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


def shrunk_scores(uploads: list, n_classes: int, n_val: np.ndarray | None = None,
                  trusted: np.ndarray | None = None) -> np.ndarray:
    """Validation scores [N] shrunk toward the trusted clients' median by the confidence of each split.

    ``n_val`` [N]: the bounded validation sizes (default: the claims as sent); ``trusted`` [N] bool
    (default: all)."""
    s = np.array([float(u.meta["val_score"]) for u in uploads])
    if n_val is None:
        n_val = np.array([max(0.0, float(u.meta.get("n_val", 0))) for u in uploads])
    k_val = np.array([min(max(float(u.meta.get("val_classes", 1)), 1.0), float(n_classes)) for u in uploads])
    m = n_val * (k_val - 1.0) / max(n_classes - 1.0, 1.0)
    med = float(np.median(s if trusted is None or not trusted.any() else s[trusted]))
    return (m * s + KAPPA * med) / (m + KAPPA)


def weights_and_events(uploads: list, weighting: str, tau: float, n_classes: int = 2,
                       sizes: SizeClaims | None = None) -> tuple[np.ndarray, list[dict]]:
    """Normalised aggregation weight per upload [N] (sums to 1) and the events of the bounds that bit.

    ``sizes``: the round's :func:`~fedmm.federated.mechanisms.claims.check_sizes` (computed when None)."""
    if weighting not in ("performance", "samples", "uniform"):
        raise ValueError(f"unknown weighting {weighting!r}")
    if not uploads:
        return np.zeros(0), []
    names = [u.meta["client"] for u in uploads]
    events: list[dict] = []
    if weighting == "uniform":
        raw = np.ones(len(uploads))
    else:
        sizes = sizes if sizes is not None else check_sizes(uploads)
        events += sizes.events
        trusted = np.array([name not in sizes.untrusted for name in names])   # [N] bool
        raw = sizes.n_train.copy()
        if weighting == "performance":
            s = shrunk_scores(uploads, n_classes, sizes.n_val, trusted)
            ref = np.median(s[trusted]) if trusted.any() else np.median(s)
            raw = raw * np.exp(np.clip((s - ref) / tau, -TILT_CLIP, TILT_CLIP))
        if trusted.any() and not trusted.all():
            bound = float(raw[trusted].max())
            for i in np.flatnonzero(~trusted & (raw > bound)):
                events.append(event(names[i], "weight", f"untrusted ({sizes.untrusted[names[i]]}): weight "
                                                        f"{raw[i] / raw.sum():.4g} capped at the heaviest trusted "
                                                        "client's"))
            raw = np.where(trusted, raw, np.minimum(raw, bound))
    w = cap_weights(raw, WEIGHT_CAP)
    pre = raw / raw.sum() if raw.sum() > 0 else w
    events += [event(names[i], "weight", f"weight {pre[i]:.4g} capped at {WEIGHT_CAP:g}x the mean weight")
               for i in np.flatnonzero(pre > w + 1e-12)]
    return w, events


def client_weights(uploads: list, weighting: str, tau: float, n_classes: int = 2) -> np.ndarray:
    """Normalised aggregation weight per upload (sums to 1); :func:`weights_and_events` without the events."""
    return weights_and_events(uploads, weighting, tau, n_classes)[0]


def effective_clients(w: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many clients the weights are worth."""
    w = np.asarray(w, float)
    return float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300)) if len(w) else 0.0
