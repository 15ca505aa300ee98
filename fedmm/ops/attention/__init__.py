"""Gated cross-attention: dispatch in :mod:`.dispatch`, the PyTorch references in :mod:`.reference`
(the Triton fast path is ``fedmm.kernels``)."""
from fedmm.ops.attention.dispatch import ATTENTION_BACKENDS, gated_cross_attention

__all__ = ["ATTENTION_BACKENDS", "gated_cross_attention"]
