"""Gated cross-attention with Triton kernels: autograd.Function and public function.

Forward: one fused kernel (``fwd.py``) writes only ``out``; nothing else is saved
besides the inputs. Backward (recomputation, no stored probabilities):

1. matmuls: ``Q = xq Wq``, ``[K | V] = xkv [Wk | Wv]``;
2. ``bwd_gate.py``: recompute attention, O, Z, G; gate backward -> dZ, dOg,
   dattn, the residual part of dxq, attn and the log-sum-exp statistics;
3. ``bwd_attn.py``: attention backward -> dQ, dK, dV;
4. matmuls (cuBLAS on GPU) for the weight gradients and the input projections'
   backward: ``[dWq | dWg] = xq^T [dQ | dZ]``, ``[dWk | dWv] = xkv^T [dK | dV]``,
   ``dWo = attn^T dOg + (attn^T dZ) Ug^T``, ``dUg = Wo^T (attn^T dZ)``,
   ``dxq += [dQ | dZ] [Wq | Wg]^T``, ``dxkv = [dK | dV] [Wk | Wv]^T``.

All kernel arithmetic accumulates in fp32. fp32 inputs follow PyTorch's float32
matmul precision: exact fp32 dot products by default, TF32 when
``torch.get_float32_matmul_precision()`` is not "highest".
"""
from __future__ import annotations

import torch

from fedmm.kernels import _common
from fedmm.kernels.bwd_attn import launch_attn_bwd
from fedmm.kernels.bwd_gate import launch_gate_bwd
from fedmm.kernels.fwd import gca_forward

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def gca_backward(dout, xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads: int):
    """Gradients ``(dxq, dxkv, dwq, dwk, dwv, dwo, dwg, dug, dbg)`` of ``sum(out * dout)``."""
    B, Lq, d = xq.shape
    Lk = xkv.shape[1]
    dout = dout.contiguous()
    wkv = torch.cat([wk, wv], dim=1)  # [d, 2d]
    q = xq @ wq  # [B, Lq, d]
    kv = xkv @ wkv  # [B, Lk, 2d] = K | V
    woug = (wo.float() @ ug.float()).to(xq.dtype)  # [d, d]
    k, v = kv[..., :d], kv[..., d:]
    attn, dattn, dxq, g3, lse2 = launch_gate_bwd(xq, q, k, v, kv_mask, dout, wo, woug, wg, bg, heads)
    dkv = _common.empty((B, Lk, 2 * d), like=xkv)  # [B, Lk, 2d] = dK | dV
    launch_attn_bwd(q, k, v, kv_mask, attn, dattn, lse2, g3[..., :d], dkv[..., :d], dkv[..., d:], heads)

    g3 = g3.view(B * Lq, 3 * d)  # [N, 3d] = dQ | dZ | dOg
    dqz, dz, dzog = g3[:, : 2 * d], g3[:, d : 2 * d], g3[:, d:]
    dw_qg = xq.reshape(-1, d).t() @ dqz  # [d, 2d] = dWq | dWg
    m = attn.view(-1, d).t() @ dzog  # [d, 2d] = attn^T dZ | attn^T dOg
    dwo = m[:, d:] + m[:, :d] @ ug.t()
    dug = wo.t() @ m[:, :d]
    dbg = dz.sum(0, dtype=torch.float32).to(bg.dtype)
    dxq = torch.addmm(dxq.view(-1, d), dqz, torch.cat([wq, wg], dim=1).t()).view(B, Lq, d)
    dkv = dkv.view(B * Lk, 2 * d)
    dw_kv = xkv.reshape(-1, d).t() @ dkv  # [d, 2d] = dWk | dWv
    dxkv = (dkv @ wkv.t()).view(B, Lk, d)
    c = torch.Tensor.contiguous
    return dxq, dxkv, c(dw_qg[:, :d]), c(dw_kv[:, :d]), c(dw_kv[:, d:]), dwo, c(dw_qg[:, d:]), dug, dbg


class GatedCrossAttentionFunction(torch.autograd.Function):
    """autograd wrapper: Triton forward, recomputing Triton + matmul backward."""

    @staticmethod
    def forward(ctx, xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads):
        tensors = [t.contiguous() for t in (xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg)]
        out = gca_forward(*tensors, heads)
        ctx.save_for_backward(*tensors)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx, dout):
        xq, xkv, kv_mask, *weights = ctx.saved_tensors
        with torch.autocast(xq.device.type, enabled=False):
            dxq, dxkv, *dweights = gca_backward(dout.to(xq.dtype), xq, xkv, kv_mask, *weights, ctx.heads)
        return (dxq, dxkv, None, *dweights, None)


def gated_cross_attention_triton(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads: int):
    """Fused gated cross-attention (docs/ARCHITECTURE.md §4), differentiable in every tensor but ``kv_mask``.

    xq [B, Lq, d], xkv [B, Lk, d], kv_mask [B, Lk] bool (True = valid key),
    wq, wk, wv, wo, wg, ug [d, d] (applied as ``x @ W``), bg [d]; one dtype among
    float32 / float16 / bfloat16 for all of them (under autocast: all are cast to
    the autocast dtype, gradients flow back in the original dtypes). Returns
    ``out`` [B, Lq, d].
    Rows whose keys are all masked get ``O = 0``, i.e. ``out = (1 - G) * xq``.
    """
    tensors = (xq, xkv, wq, wk, wv, wo, wg, ug, bg)
    device_type = xq.device.type
    if torch.is_autocast_enabled(device_type):  # run in the autocast dtype, like the matmuls it replaces
        tensors = tuple(t.to(torch.get_autocast_dtype(device_type)) for t in tensors)
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or tensors[0].dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"gated_cross_attention_triton needs one dtype among {SUPPORTED_DTYPES}; got {dtypes}")
    if kv_mask.dtype != torch.bool:
        raise TypeError(f"kv_mask must be bool; got {kv_mask.dtype}")
    if len({t.device for t in (*tensors, kv_mask)}) != 1:
        raise ValueError("all tensors must be on the same device")
    with torch.autocast(device_type, enabled=False):
        return GatedCrossAttentionFunction.apply(tensors[0], tensors[1], kv_mask, *tensors[2:], heads)
