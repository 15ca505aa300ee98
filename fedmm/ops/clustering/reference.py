"""PyTorch reference of weighted K-Means (docs/ARCHITECTURE.md §8), the ``torch`` backend of ``fedmm.ops.kmeans``."""
from __future__ import annotations

import numpy as np
import torch


def torch_device(device=None) -> torch.device:
    """The device of the torch backend: ``device``, or CUDA when available and none is given."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def kmeans_reference(x: np.ndarray, k: int, weights: np.ndarray, iters: int, seed: int, device=None) -> np.ndarray:
    """Weighted k-means++ seeding and Lloyd iterations on ``device`` (see :func:`torch_device`); centers [k, d].

    The ``torch`` backend of :func:`fedmm.ops.kmeans`; ``x`` [N, d] float32, ``weights`` [N] float32.
    """
    gen = torch.Generator().manual_seed(seed)
    device = torch_device(device)
    xt = torch.from_numpy(x).to(device, torch.float32)  # [N, d]
    wt = torch.from_numpy(weights).to(device, torch.float32)  # [N]
    # k-means++ seeding (weighted)
    first = int(torch.multinomial(wt.cpu() / wt.sum().cpu(), 1, generator=gen))
    centers = [xt[first]]
    for _ in range(1, k):
        d2 = torch.cdist(xt, torch.stack(centers)).min(1).values ** 2  # [N]
        p = (d2 * wt).cpu()
        idx = int(torch.multinomial(p / p.sum(), 1, generator=gen)) if p.sum() > 0 else int(torch.randint(len(xt), (1,), generator=gen))
        centers.append(xt[idx])
    c = torch.stack(centers)  # [k, d]
    for _ in range(iters):
        assign = torch.cdist(xt, c).argmin(1)  # [N]
        sums = torch.zeros_like(c).index_add_(0, assign, xt * wt[:, None])
        mass = torch.zeros(k, device=device).index_add_(0, assign, wt)
        nonempty = mass > 0
        c[nonempty] = sums[nonempty] / mass[nonempty, None]
    return c.cpu().numpy()
