"""Update-norm clipping (server half only; the client half is none).

Before aggregation, each client's update (its uploaded ``shared/<name>`` tensors
minus the broadcast ones, all of that client's federated tensors taken together
as one vector) is scaled down to an L2 norm of at most the round's bound, as
Flower's fixed-clipping wrappers do on the server side:

    delta = upload - broadcast ;  upload' = broadcast + delta * min(1, bound / ||delta||)

The bound is ``fed.clip_norm`` (fixed), or with ``fed.clip_quantile`` in (0, 1] the
``clip_quantile`` quantile of the round's update norms (adaptive: a client can no
longer move the aggregate more than the typical client does); with both set, the
smaller of the two. Both 0 (the default): off, and ``server_round`` does not call
this module. Arithmetic is float64; clipped tensors go back as float32, and an
update at or below the bound is left untouched (the same arrays). Every clipped
client is reported as ``{"client", "norm", "bound"}``.

A scaled update keeps each BatchNorm running variance a convex combination of
the broadcast and the uploaded one, hence non-negative.
"""
from __future__ import annotations

import math

import numpy as np

from fedmm.federated.messages import Message


def check_clipping(clip_norm: float, clip_quantile: float) -> None:
    """Raise ValueError unless ``clip_norm`` >= 0 and 0 <= ``clip_quantile`` <= 1 (both finite)."""
    if not (math.isfinite(clip_norm) and clip_norm >= 0):
        raise ValueError(f"fed.clip_norm must be >= 0 (0 = off), got {clip_norm}")
    if not (math.isfinite(clip_quantile) and 0 <= clip_quantile <= 1):
        raise ValueError(f"fed.clip_quantile must lie in [0, 1] (0 = off), got {clip_quantile}")


def enabled(fcfg) -> bool:
    """True when ``fed.clip_norm`` or ``fed.clip_quantile`` asks for clipping."""
    return float(getattr(fcfg, "clip_norm", 0.0)) > 0 or float(getattr(fcfg, "clip_quantile", 0.0)) > 0


def _update_keys(shared: dict[str, np.ndarray], upload: Message) -> list[str]:
    """The upload's federated tensors that have a broadcast counterpart of the same shape."""
    return [k for k in upload.arrays if k.startswith("shared/") and k[len("shared/"):] in shared
            and upload.arrays[k].shape == shared[k[len("shared/"):]].shape]


def update_norm(shared: dict[str, np.ndarray], upload: Message) -> float:
    """L2 norm (float64) of the upload's update over all its federated tensors."""
    total = 0.0
    for k in _update_keys(shared, upload):
        d = upload.arrays[k].astype(np.float64) - shared[k[len("shared/"):]].astype(np.float64)
        total += float((d * d).sum())
    return math.sqrt(total)


def clip_bound(norms: np.ndarray, clip_norm: float, clip_quantile: float) -> float:
    """The round's bound: ``clip_norm``, the ``clip_quantile`` quantile of ``norms``, or the smaller one."""
    check_clipping(clip_norm, clip_quantile)
    bounds = [float(clip_norm)] if clip_norm > 0 else []
    if clip_quantile > 0 and len(norms):
        bounds.append(float(np.quantile(np.asarray(norms, np.float64), clip_quantile)))
    return min(bounds) if bounds else math.inf


def clip_upload(shared: dict[str, np.ndarray], upload: Message, norm: float, bound: float) -> Message:
    """A copy of ``upload`` whose update is scaled by ``bound / norm`` (other arrays and meta shared)."""
    factor = bound / norm
    arrays = dict(upload.arrays)
    for k in _update_keys(shared, upload):
        base = shared[k[len("shared/"):]].astype(np.float64)
        arrays[k] = (base + (upload.arrays[k].astype(np.float64) - base) * factor).astype(np.float32)
    return Message(upload.kind, arrays, upload.meta)


def clip_updates(shared: dict[str, np.ndarray], uploads: list[Message], clip_norm: float,
                 clip_quantile: float = 0.0) -> tuple[list[Message], list[dict], float]:
    """Server step before aggregation: every update clipped to the round's bound.

    ``shared``: the broadcast's federated tensors (name -> array). Returns the uploads
    (unclipped ones are the same objects), one ``{"client", "norm", "bound"}`` per clipped
    client in upload order, and the bound."""
    norms = np.array([update_norm(shared, u) for u in uploads], np.float64)
    bound = clip_bound(norms, clip_norm, clip_quantile)
    out, clipped = [], []
    for u, norm in zip(uploads, norms):
        if norm > bound and norm > 0:
            out.append(clip_upload(shared, u, float(norm), bound))
            clipped.append({"client": u.meta.get("client"), "norm": float(norm), "bound": float(bound)})
        else:
            out.append(u)
    return out, clipped, float(bound)
