"""Weighted K-Means (:func:`fedmm.ops.kmeans`): dispatch and the FAISS calls in :mod:`.dispatch`,
the PyTorch reference in :mod:`.reference`."""
from fedmm.ops.clustering.dispatch import kmeans

__all__ = ["kmeans"]
