"""Weighted K-Means (docs/ARCHITECTURE.md §8): FAISS (GPU build if present, else CPU) or PyTorch Lloyd.

The PyTorch Lloyd reference is :mod:`fedmm.ops.clustering.reference`; FAISS is called here.
"""
from __future__ import annotations

import numpy as np
import torch

from fedmm.ops.backend import resolve_backend
from fedmm.ops.clustering.reference import kmeans_reference


def _faiss_unavailable() -> str | None:
    try:
        import faiss  # noqa: F401
    except Exception as exc:
        return f"faiss not importable ({exc})"
    return None


def _faiss_gpu_unavailable() -> str | None:
    reason = _faiss_unavailable()
    if reason:
        return reason
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return "faiss has no GPU support here"
    return None


def _kmeans_faiss(x: np.ndarray, k: int, weights: np.ndarray, iters: int, seed: int, gpu: bool) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, gpu=gpu, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1_000_000)
    km.train(np.ascontiguousarray(x, np.float32), weights=np.ascontiguousarray(weights, np.float32))
    return km.centroids.copy()


def kmeans(x, k: int, weights=None, iters: int = 25, seed: int = 0, backend: str = "auto", device=None):
    """Cluster rows of ``x`` [N, d] into ``min(k, N)`` centers.

    Returns ``(centers [k', d] float32, assign [N] int64)``. ``weights`` [N]
    (e.g. cluster counts) weight each point. Backends: auto|faiss-gpu|faiss|torch.
    ``device`` places the torch backend (default: CUDA when available, else CPU); given,
    it also restricts ``auto`` to that device: CUDA -> faiss-gpu, else torch on the GPU;
    CPU -> faiss (CPU), else torch on the CPU.
    """
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"kmeans: x must be a non-empty [N, d] array; got shape {x.shape}")
    w = np.ones(len(x), np.float32) if weights is None else np.asarray(weights, np.float32)
    k = int(min(k, len(x)))
    available = {"faiss-gpu": _faiss_gpu_unavailable, "faiss": _faiss_unavailable, "torch": lambda: None}
    if backend == "auto" and device is not None:   # stay on the requested device
        on_gpu = torch.device(device).type == "cuda"
        available = {n: p for n, p in available.items() if n != ("faiss" if on_gpu else "faiss-gpu")}
    chosen = resolve_backend("kmeans", backend, available)
    if chosen == "torch":
        centers = kmeans_reference(x, k, w, iters, seed, device)
    else:
        centers = _kmeans_faiss(x, k, w, iters, seed, gpu=chosen == "faiss-gpu")
    d2 = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)  # [N, k]
    return centers.astype(np.float32), d2.argmin(1).astype(np.int64)
