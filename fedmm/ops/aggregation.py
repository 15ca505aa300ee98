"""Weighted / robust aggregation of client buffers (docs/ARCHITECTURE.md §8): ``fedmm._C`` or numpy.

A *buffer* is one client's flattened parameter group (1-D float32/float64 array, all of
one length and dtype). ``masks[k] = False`` means client k did not train this group: its
buffer is ignored (it may be ``None``) by every method, and mean weights are renormalised
over the remaining clients. Shape/dtype mismatches and NaN/Inf values raise ``ValueError``
naming the client index. The ``cpp`` backend reads the buffers in place (no stacking copy)
on several threads with the GIL released; ``numpy`` is the float64 reference.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from fedmm.ops._dispatch import resolve_backend
from fedmm.ops.assignment import _core, extension_unavailable, warn_fallback_once

METHODS = ("mean", "median", "trimmed_mean")


@functools.lru_cache(maxsize=None)
def _resolve(op: str, backend: str) -> str:
    """Backend for (op, requested), memoised: the extension's presence cannot change."""
    chosen = resolve_backend(op, backend, {"cpp": extension_unavailable, "numpy": lambda: None})
    if backend == "auto" and chosen != "cpp":
        warn_fallback_once(op, chosen)
    return chosen


def _prepare(buffers, masks) -> list:
    """Buffers as arrays; contiguous 1-D ones pass through untouched, masked-out ones as given."""
    keep = [True] * len(buffers) if masks is None else [bool(m) for m in masks]
    out = list(buffers)
    for k, b in enumerate(out):
        if k < len(keep) and keep[k] and b is not None:
            a = np.asarray(b)
            out[k] = np.ascontiguousarray(a) if a.ndim == 1 else a
    return out


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


def _aggregate_numpy(buffers, weights, method, masks, trim, accumulate) -> np.ndarray:
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


def aggregate(buffers: Sequence[np.ndarray], weights=None, method: str = "mean", masks=None,
              trim: float = 0.1, backend: str = "auto", *, accumulate: str = "float64",
              n_threads: int | None = None) -> np.ndarray:
    """Aggregate K 1-D client buffers coordinate-wise into one buffer of their dtype.

    method: ``mean`` (weights [K] >= 0, default uniform, renormalised over unmasked clients),
    ``median`` (mean of the two middle values for an even count) or ``trimmed_mean`` (drop
    ``floor(trim * K')`` values at each end, ``0 <= trim < 0.5``, K' = unmasked clients);
    weights apply to ``mean`` only. masks [K] bool (default all True). accumulate:
    ``float64`` or ``native`` (the buffers' dtype; mean only). backend: auto | cpp | numpy.
    n_threads: cpp worker threads (default: all cores).
    """
    if method not in METHODS:
        raise ValueError(f"aggregate: unknown method {method!r} (choose from {', '.join(METHODS)})")
    if not 0 <= trim < 0.5:
        raise ValueError("aggregate: trim must be in [0, 0.5)")
    if accumulate not in ("float64", "native"):
        raise ValueError(f"aggregate: accumulate must be 'float64' or 'native', got {accumulate!r}")
    buffers = _prepare(buffers, masks)
    if _resolve("aggregate", backend) == "cpp":
        return _core().aggregate(buffers, weights, masks, method, float(trim), accumulate == "float64", int(n_threads or 0))
    return _aggregate_numpy(buffers, weights, method, masks, trim, accumulate)


def krum_scores(buffers: Sequence[np.ndarray], n_byzantine: int, masks=None, backend: str = "auto",
                n_threads: int | None = None) -> np.ndarray:
    """Krum score per client (Blanchard et al., 2017): the sum of squared distances to its
    ``m = K' - n_byzantine - 2`` nearest unmasked peers (clamped to ``[1, K' - 1]``).

    Returns float64 [K]; masked-out clients score ``inf``. Krum keeps the lowest-scoring
    client; multi-Krum averages the ``M`` lowest, e.g. ``aggregate(buffers,
    masks=scores <= np.sort(scores)[M - 1])``.
    """
    if n_byzantine < 0:
        raise ValueError("krum_scores: n_byzantine must be >= 0")
    buffers = _prepare(buffers, masks)
    if _resolve("krum_scores", backend) == "cpp":
        return _core().krum_scores(buffers, int(n_byzantine), masks, int(n_threads or 0))
    ids, bufs = _kept(buffers, masks, "krum_scores")
    stack = np.stack([b.astype(np.float64) for b in bufs])  # [K', P]
    Kp = len(bufs)
    dist = np.stack([((stack - stack[a]) ** 2).sum(axis=1) for a in range(Kp)])  # [K', K']
    np.fill_diagonal(dist, np.inf)
    m = min(max(Kp - n_byzantine - 2, 1), Kp - 1)
    out = np.full(len(buffers), np.inf)
    out[ids] = np.sort(dist, axis=1)[:, :m].sum(axis=1)
    return out
