"""numpy reference of the aggregation ops: float64 arithmetic, the ``numpy`` backend and test oracle.

It validates exactly like the C++ core (``csrc/aggregate.cpp``): every error names the
client index. Semantics are those of :func:`fedmm.ops.aggregate` and
:func:`fedmm.ops.krum_scores`.
"""
from __future__ import annotations

import numpy as np


def _kept(buffers, masks, what: str) -> tuple[list[int], list[np.ndarray]]:
    """Validate like the C++ core; returns (client ids, buffers) of the unmasked clients."""
    K = len(buffers)
    if K == 0:
        raise ValueError(f"{what}: no client buffers")
    if masks is not None and len(masks) != K:
        raise ValueError(f"{what}: masks has {len(masks)} entries for {K} clients")
    ids = [k for k in range(K) if masks is None or bool(masks[k])]
    if not ids:
        raise ValueError(f"{what}: every client is masked out")
    bufs = []
    for k in ids:
        b = buffers[k]
        if not isinstance(b, np.ndarray):
            raise TypeError(f"{what}: client {k}: expected a numpy array")
        if b.ndim != 1:
            raise ValueError(f"{what}: client {k}: expected a 1-D buffer, got shape {b.shape}")
        if b.dtype not in (np.float32, np.float64):
            raise TypeError(f"{what}: client {k}: expected float32 or float64, got {b.dtype}")
        if bufs and b.dtype != bufs[0].dtype:
            raise ValueError(f"{what}: client {k}: dtype {b.dtype} differs from client {ids[0]}'s {bufs[0].dtype}")
        if bufs and b.shape != bufs[0].shape:
            raise ValueError(f"{what}: client {k}: shape {b.shape} differs from client {ids[0]}'s {bufs[0].shape}")
        bad = np.flatnonzero(~np.isfinite(b))
        if bad.size:
            raise ValueError(f"{what}: client {k} has a non-finite value ({b[bad[0]]}) at index {bad[0]}")
        bufs.append(b)
    return ids, bufs


def aggregate_reference(buffers, weights, method, masks, trim, accumulate) -> np.ndarray:
    """Coordinate-wise ``mean`` / ``median`` / ``trimmed_mean`` of the unmasked buffers [P], in their dtype."""
    ids, bufs = _kept(buffers, masks, "aggregate")
    dtype = bufs[0].dtype
    if method == "mean":
        w = np.ones(len(buffers)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(buffers),):
            raise ValueError(f"aggregate: weights must be a 1-D array of {len(buffers)} values")
        w = w[ids]
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("aggregate: weights must be finite and >= 0")
        if not w.sum() > 0:
            raise ValueError("aggregate: the weights of the unmasked clients sum to 0")
        w = w / w.sum()
        acc = np.dtype(np.float64) if accumulate == "float64" else dtype
        out = np.zeros(bufs[0].shape, acc)  # [P]
        for wk, b in zip(w, bufs):
            out += acc.type(wk) * b.astype(acc, copy=False)
        return out.astype(dtype)
    stack = np.stack([b.astype(np.float64) for b in bufs])  # [K', P]
    if method == "median":
        return np.median(stack, axis=0).astype(dtype)
    n_trim = int(np.floor(trim * len(bufs)))
    srt = np.sort(stack, axis=0)  # [K', P]
    return srt[n_trim:len(bufs) - n_trim].mean(axis=0).astype(dtype)


def krum_scores_reference(buffers, n_byzantine: int, masks) -> np.ndarray:
    """Krum score per client, float64 [K] (masked-out clients: ``inf``)."""
    ids, bufs = _kept(buffers, masks, "krum_scores")
    stack = np.stack([b.astype(np.float64) for b in bufs])  # [K', P]
    Kp = len(bufs)
    dist = np.stack([((stack - stack[a]) ** 2).sum(axis=1) for a in range(Kp)])  # [K', K']
    np.fill_diagonal(dist, np.inf)
    m = min(max(Kp - n_byzantine - 2, 1), Kp - 1)
    out = np.full(len(buffers), np.inf)
    out[ids] = np.sort(dist, axis=1)[:, :m].sum(axis=1)
    return out
