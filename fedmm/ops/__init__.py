"""The only place that picks an implementation (reference PyTorch, Triton, C++, scipy/numpy, FAISS).

One folder per op (docs/ARCHITECTURE.md §8): ``<op>/dispatch.py`` checks the arguments and
picks the backend (:mod:`fedmm.ops.backend`), ``<op>/reference.py`` holds the reference
implementation ``<function>_reference``, the test oracle. The fast paths stay outside the package
tree: ``kernels/`` (Triton, ``fedmm.kernels``) and ``csrc/`` (C++, ``fedmm._C``).
"""
from fedmm.ops.aggregation import aggregate, krum_scores
from fedmm.ops.assignment import linear_sum_assignment, linear_sum_assignment_batch
from fedmm.ops.attention import gated_cross_attention
from fedmm.ops.backend import BackendUnavailableError, resolve_backend
from fedmm.ops.clustering import kmeans

__all__ = [
    "BackendUnavailableError", "resolve_backend", "aggregate", "krum_scores",
    "linear_sum_assignment", "linear_sum_assignment_batch", "gated_cross_attention", "kmeans",
]
