"""Weighted / robust aggregation of client buffers (DESIGN §8): numpy fallback."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fedmm.ops._dispatch import resolve_backend


def aggregate(buffers: Sequence[np.ndarray], weights=None, method: str = "mean", masks=None,
              trim: float = 0.1, backend: str = "auto") -> np.ndarray:
    """Aggregate K 1-D client buffers into one (``mean``, ``median``, ``trimmed_mean``).

    ``weights`` [K] (default uniform) are normalised over the clients whose
    ``masks[k]`` is True (default all True).
    """
    resolve_backend("aggregate", backend, {"numpy": lambda: None})
    K = len(buffers)
    if K == 0:
        raise ValueError("aggregate: no buffers")
    keep = np.ones(K, bool) if masks is None else np.asarray(masks, bool)
    if not keep.any():
        raise ValueError("aggregate: every client is masked out")
    stack = np.stack([np.asarray(b, np.float64) for b, k in zip(buffers, keep) if k])  # [K', P]
    if method == "mean":
        w = np.ones(K) if weights is None else np.asarray(weights, np.float64)
        w = w[keep] / w[keep].sum()
        out = w @ stack
    elif method == "median":
        out = np.median(stack, axis=0)
    elif method == "trimmed_mean":
        n_trim = int(np.floor(trim * stack.shape[0]))
        srt = np.sort(stack, axis=0)
        out = srt[n_trim: stack.shape[0] - n_trim].mean(axis=0)
    else:
        raise ValueError(f"aggregate: unknown method {method!r}")
    return out.astype(np.asarray(buffers[0]).dtype)


def krum_scores(buffers: Sequence[np.ndarray], n_byzantine: int) -> np.ndarray:
    """Krum score of each client: sum of squared distances to its K - f - 2 nearest others."""
    stack = np.stack([np.asarray(b, np.float64) for b in buffers])  # [K, P]
    K = stack.shape[0]
    sq = (stack ** 2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * stack @ stack.T  # [K, K]
    np.fill_diagonal(dist, np.inf)
    m = max(K - n_byzantine - 2, 1)
    return np.sort(dist, axis=1)[:, :m].sum(1)
