"""Client representation summaries: local K-Means centroids, counts and label histograms.

These summaries carry no formal privacy guarantee: the optional clip + noise on centroids
(``fed.dp_clip`` / ``fed.dp_noise``) leaves counts and histograms exact, and the K-Means
assignment itself depends on every sample. With ``fed.dp = client`` they are not sent
(fedmm/federated/mechanisms/client_dp.py).
"""
from __future__ import annotations

import numpy as np

from fedmm.ops import kmeans


def summarize_vectors(vectors: np.ndarray, labels: np.ndarray, n_classes: int, k: int, min_cluster_size: int,
                      seed: int, dp_clip: float = 0.0, dp_noise: float = 0.0,
                      multilabel: bool = False, device=None) -> dict[str, np.ndarray]:
    """Cluster pooled vectors [N, d] into <= k centroids; drop clusters smaller than ``min_cluster_size``.

    Returns {"centroids": [k', d] float32, "counts": [k'] float32, "hist": [k', C] float32}.
    With ``dp_clip`` > 0 vectors are clipped to that L2 norm and, with ``dp_noise`` > 0,
    Gaussian noise of std dp_noise * dp_clip / count is added to each centroid: noise on
    centroids without a formal guarantee (the counts and histograms are exact, the cluster
    assignment is data-dependent, and nothing accounts for it). Per-sample vectors never leave.
    ``device``: where K-Means runs (:func:`fedmm.ops.kmeans`; default CUDA when available).
    """
    vectors = np.asarray(vectors, np.float32)
    d = vectors.shape[1]
    empty = {"centroids": np.zeros((0, d), np.float32), "counts": np.zeros(0, np.float32),
             "hist": np.zeros((0, n_classes), np.float32)}
    if len(vectors) < max(min_cluster_size, 1):
        return empty
    if dp_clip > 0:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors * np.minimum(1.0, dp_clip / np.maximum(norms, 1e-12))
    k = max(1, min(k, len(vectors) // max(min_cluster_size, 1)))
    centers, assign = kmeans(vectors, k, seed=seed % (2**31), device=device)
    onehot = labels.astype(np.float32) if multilabel else np.eye(n_classes, dtype=np.float32)[labels]  # [N, C]
    counts = np.bincount(assign, minlength=len(centers)).astype(np.float32)
    keep = counts >= min_cluster_size
    means = np.stack([vectors[assign == c].mean(0) if counts[c] else centers[c] for c in range(len(centers))])
    hist = np.stack([onehot[assign == c].sum(0) for c in range(len(centers))]).astype(np.float32)
    means, counts, hist = means[keep], counts[keep], hist[keep]
    if dp_clip > 0 and dp_noise > 0 and len(means):
        rng = np.random.default_rng(seed)
        means = means + rng.normal(0, 1, means.shape) * (dp_noise * dp_clip / counts[:, None])
    return {"centroids": means.astype(np.float32), "counts": counts, "hist": hist}
