"""The only place that picks an implementation (reference PyTorch, Triton, C++, scipy/numpy, FAISS)."""
from fedmm.ops._dispatch import BackendUnavailableError, resolve_backend
from fedmm.ops.aggregation import aggregate, krum_scores
from fedmm.ops.assignment import linear_sum_assignment, linear_sum_assignment_batch
from fedmm.ops.attention import gated_cross_attention
from fedmm.ops.kmeans import kmeans

__all__ = [
    "BackendUnavailableError", "resolve_backend", "aggregate", "krum_scores",
    "linear_sum_assignment", "linear_sum_assignment_batch", "gated_cross_attention", "kmeans",
]
