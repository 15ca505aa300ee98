"""Weighted / robust aggregation of client buffers (docs/ARCHITECTURE.md §8): ``fedmm._C`` or numpy.

A *buffer* is one client's flattened parameter group (1-D float32/float64 array, all of
one length and dtype). ``masks[k] = False`` means client k did not train this group: its
buffer is ignored (it may be ``None``) by every method, and mean weights are renormalised
over the remaining clients. Shape/dtype mismatches and NaN/Inf values raise ``ValueError``
naming the client index. The ``cpp`` backend reads the buffers in place (no stacking copy)
on several threads with the GIL released; ``numpy`` is the float64 reference
(:mod:`fedmm.ops.aggregation.reference`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from fedmm.ops.aggregation.reference import aggregate_reference, krum_scores_reference
from fedmm.ops.backend import core, extension_unavailable, resolve_compiled

METHODS = ("mean", "median", "trimmed_mean")


@functools.lru_cache(maxsize=None)
def _resolve(op: str, backend: str) -> str:
    """Backend for (op, requested), memoised: the extension's presence cannot change."""
    return resolve_compiled(op, backend, "numpy", extension_unavailable)


def _prepare(buffers, masks) -> list:
    """Buffers as arrays; contiguous 1-D ones pass through untouched, masked-out ones as given."""
    keep = [True] * len(buffers) if masks is None else [bool(m) for m in masks]
    out = list(buffers)
    for k, b in enumerate(out):
        if k < len(keep) and keep[k] and b is not None:
            a = np.asarray(b)
            out[k] = np.ascontiguousarray(a) if a.ndim == 1 else a
    return out


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
        return core().aggregate(buffers, weights, masks, method, float(trim), accumulate == "float64", int(n_threads or 0))
    return aggregate_reference(buffers, weights, method, masks, trim, accumulate)


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
        return core().krum_scores(buffers, int(n_byzantine), masks, int(n_threads or 0))
    return krum_scores_reference(buffers, n_byzantine, masks)
