"""Gated cross-attention (docs/ARCHITECTURE.md §4): input checks and dispatch to Triton or the references.

Math (weights applied as ``x @ W``; ``dh = d / heads``)::

    Q = xq Wq ; K = xkv Wk ; V = xkv Wv
    A = softmax(Q K^T / sqrt(dh) + (-inf where ~kv_mask))   (rows with no valid key: A = 0)
    O = concat_heads(A V) Wo
    G = sigmoid(xq Wg + O Ug + bg)
    out = G * O + (1 - G) * xq
"""
from __future__ import annotations

import os

import torch

from fedmm.ops.attention.reference import gated_cross_attention_reference, gated_cross_attention_torch
from fedmm.ops.backend import resolve_backend


def _check_inputs(xq, xkv, kv_mask, weights, bg, heads) -> None:
    if xq.dim() != 3 or xkv.dim() != 3:
        raise ValueError(f"xq and xkv must be [B, L, d]; got {tuple(xq.shape)} and {tuple(xkv.shape)}")
    B, _, d = xq.shape
    if xkv.shape[0] != B or xkv.shape[2] != d:
        raise ValueError(f"xkv {tuple(xkv.shape)} does not match xq {tuple(xq.shape)}")
    if kv_mask.shape != xkv.shape[:2] or kv_mask.dtype != torch.bool:
        raise ValueError(f"kv_mask must be bool [B, Lk] = {tuple(xkv.shape[:2])}; got {kv_mask.dtype} {tuple(kv_mask.shape)}")
    for name, w in weights.items():
        if w.shape != (d, d):
            raise ValueError(f"{name} must be [{d}, {d}]; got {tuple(w.shape)}")
    if bg.shape != (d,):
        raise ValueError(f"bg must be [{d}]; got {tuple(bg.shape)}")
    if heads <= 0 or d % heads:
        raise ValueError(f"heads={heads} must divide d={d}")


def _triton_unavailable(device_type: str, dtype: torch.dtype | None = None) -> str | None:
    try:
        import fedmm.kernels as kernels
    except Exception as exc:  # ImportError, or triton missing/broken
        return f"fedmm.kernels could not be imported ({exc})"
    if dtype is not None and dtype not in kernels.SUPPORTED_DTYPES:
        return f"Triton kernels support {[str(t) for t in kernels.SUPPORTED_DTYPES]}, not {dtype}"
    if device_type == "cuda":
        return None
    if device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        if kernels.INTERPRETED:
            return None
        return "TRITON_INTERPRET=1 must be set before fedmm.kernels is first imported"
    return "Triton kernels need CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 for the interpreter)"


ATTENTION_BACKENDS = ("triton", "torch", "naive")   # besides "auto"; the keys of ``available`` below


def gated_cross_attention(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads, backend="auto"):
    """Gated cross-attention, ``out[B, Lq, d]`` (see module docstring for the math).

    xq [B, Lq, d], xkv [B, Lk, d], kv_mask [B, Lk] bool (True = valid key),
    wq, wk, wv, wo, wg, ug [d, d], bg [d]. ``backend`` in auto|torch|triton|naive:
    ``auto`` uses Triton on CUDA tensors (float32/float16/bfloat16) and the
    PyTorch path otherwise; ``triton`` on CPU tensors runs the kernels in
    Triton's interpreter and requires ``TRITON_INTERPRET=1`` (else it raises).
    """
    _check_inputs(xq, xkv, kv_mask, dict(wq=wq, wk=wk, wv=wv, wo=wo, wg=wg, ug=ug), bg, heads)
    device_type = xq.device.type
    available = {
        "triton": lambda: _triton_unavailable(device_type, xq.dtype) if device_type == "cuda" or backend == "triton"
        else "auto uses Triton only on CUDA tensors",
        "torch": lambda: None,
        "naive": lambda: None,
    }
    chosen = resolve_backend("gated_cross_attention", backend, available)
    if chosen == "triton":
        from fedmm.kernels import gated_cross_attention_triton

        return gated_cross_attention_triton(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads)
    fn = gated_cross_attention_torch if chosen == "torch" else gated_cross_attention_reference
    return fn(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads)
