"""Triton kernels (installed as ``fedmm.kernels``).

``gated_cross_attention_triton`` is the fused gated cross-attention of docs/ARCHITECTURE.md §4
(forward and backward). The kernels run on CUDA tensors, or on CPU tensors in
Triton's interpreter when ``TRITON_INTERPRET=1`` was set before this package was
first imported; ``INTERPRETED`` records which mode the kernels were built in.
"""
from fedmm.kernels.fwd import _gca_fwd_kernel as _probe_kernel
from fedmm.kernels.gated_cross_attention import SUPPORTED_DTYPES, gated_cross_attention_triton

INTERPRETED: bool = type(_probe_kernel).__name__ == "InterpretedFunction"

__all__ = ["gated_cross_attention_triton", "INTERPRETED", "SUPPORTED_DTYPES"]
