"""Fused forward kernel of gated cross-attention (docs/ARCHITECTURE.md §4).

One program per (batch element, block of query rows). For every head it
projects Q_h = xq Wq[:, h] in-kernel, runs an online-softmax attention over the
key blocks (K_h, V_h projected in-kernel, or loaded when precomputed), and
immediately folds the head's ``A_h V_h`` into two ``[BLOCK_Q, d]`` fp32
accumulators::

    O  = sum_h (A_h V_h) Wo[h rows, :]          = concat_heads(A V) Wo
    Zo = sum_h (A_h V_h) (Wo Ug)[h rows, :]     = O Ug

so neither the attention probabilities nor the un-gated output O ever touch
global memory. The epilogue adds ``xq Wg + bg``, applies the sigmoid gate and
writes only ``out = G*O + (1-G)*xq``.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fedmm.kernels import _common
from fedmm.kernels._common import attend_head, xw


@triton.jit
def _gca_fwd_kernel(
    xq_ptr, xkv_ptr, k_ptr, v_ptr, mask_ptr,
    wq_ptr, wk_ptr, wv_ptr, wo_ptr, woug_ptr, wg_ptr, bg_ptr,
    out_ptr,  # [B, Lq, D], same strides as xq
    Lq, Lk, qk_scale,
    stride_xq_b, stride_xq_l, stride_xkv_b, stride_xkv_l, stride_kv_b, stride_kv_l, stride_m_b,
    H: tl.constexpr, D: tl.constexpr, DH: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DH: tl.constexpr,
    BLOCK_DV: tl.constexpr, BLOCK_C: tl.constexpr, KV_PROJECTED: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_qb = tl.cdiv(Lq, BLOCK_Q)
    b = (pid // num_qb).to(tl.int64)
    offs_q = (pid % num_qb) * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BLOCK_Q]
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_ok = offs_q < Lq
    d_ok = offs_d < D
    row_off = b * stride_xq_b + offs_q * stride_xq_l  # [BLOCK_Q]
    dtype = xq_ptr.dtype.element_ty

    o_acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)  # O            [BLOCK_Q, BLOCK_D]
    z_acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)  # O Ug, then + xq Wg + bg
    for h in range(H):
        q_h = xw(tl.zeros([BLOCK_Q, BLOCK_DH], tl.float32), xq_ptr, row_off, q_ok, wq_ptr, h * DH, DH,
                 D, BLOCK_DH, BLOCK_C, PRECISION).to(dtype)  # [BLOCK_Q, BLOCK_DH]
        for v0 in range(0, DH, BLOCK_DV):  # a single pass unless the head is wider than BLOCK_DV
            a_h, _ = attend_head(
                q_h, xkv_ptr, wk_ptr, wv_ptr, k_ptr, v_ptr, mask_ptr, b, h, v0, Lk, qk_scale,
                stride_xkv_b, stride_xkv_l, stride_kv_b, stride_kv_l, stride_m_b,
                D, DH, BLOCK_Q, BLOCK_K, BLOCK_DH, BLOCK_DV, BLOCK_C, KV_PROJECTED, PRECISION,
            )
            a_h = a_h.to(dtype)  # [BLOCK_Q, BLOCK_DV]
            w_rows = h * DH + v0 + offs_dv  # rows of Wo belonging to these value columns
            w_offs = w_rows[:, None] * D + offs_d[None, :]  # [BLOCK_DV, BLOCK_D]
            w_mask = ((v0 + offs_dv) < DH)[:, None] & d_ok[None, :]
            o_acc += tl.dot(a_h, tl.load(wo_ptr + w_offs, mask=w_mask, other=0.0), input_precision=PRECISION)
            z_acc += tl.dot(a_h, tl.load(woug_ptr + w_offs, mask=w_mask, other=0.0), input_precision=PRECISION)

    z_acc = xw(z_acc, xq_ptr, row_off, q_ok, wg_ptr, 0, D, D, BLOCK_D, BLOCK_C, PRECISION)
    bg = tl.load(bg_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)  # [BLOCK_D]
    g = tl.sigmoid(z_acc + bg[None, :])  # forget gate  [BLOCK_Q, BLOCK_D]
    tile = row_off[:, None] + offs_d[None, :]
    tile_mask = q_ok[:, None] & d_ok[None, :]
    xq = tl.load(xq_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)  # [BLOCK_Q, BLOCK_D]
    out = g * o_acc + (1.0 - g) * xq
    tl.store(out_ptr + tile, out.to(dtype), mask=tile_mask)


def gca_forward(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads: int, out: torch.Tensor | None = None):
    """Launch the fused forward. All tensors contiguous, one floating dtype; returns ``out [B, Lq, d]``.

    ``out`` (contiguous) may be passed in; it is fully overwritten. K and V are
    projected inside the kernel when a batch element's queries fit one block
    (the usual case); with several query blocks they are projected once by a
    matmul instead of once per block.
    """
    B, Lq, d = xq.shape
    Lk = xkv.shape[1]
    cfg = _common.tile_config(Lq, Lk, d, heads, xq.dtype, kernel="fwd")
    kv_projected = Lq > cfg["BLOCK_Q"]
    woug = (wo.float() @ ug.float()).to(xq.dtype)  # [d, d]: O Ug = concat(AV) (Wo Ug)
    if kv_projected:
        kv = xkv @ torch.cat([wk, wv], dim=1)  # [B, Lk, 2d] = K | V
        k, v = kv[..., :d], kv[..., d:]
    else:
        k = v = xkv  # unused by the kernel
    if out is None:
        out = _common.empty((B, Lq, d), like=xq)
    assert out.shape == xq.shape and out.stride() == xq.stride()
    mask = kv_mask.view(torch.uint8)  # [B, Lk]
    args = (
        xq, xkv, k, v, mask, wq, wk, wv, wo, woug, wg, bg, out,
        Lq, Lk, math.log2(math.e) / math.sqrt(d // heads),
        xq.stride(0), xq.stride(1), xkv.stride(0), xkv.stride(1), k.stride(0), k.stride(1), mask.stride(0),
    )
    with _common.launch_device(xq):
        _common.launch(
            _gca_fwd_kernel, lambda meta: (B * triton.cdiv(Lq, meta["BLOCK_Q"]),), args, cfg,
            shrinkable=("BLOCK_Q", "BLOCK_K", "BLOCK_DV", "BLOCK_C"),
            H=heads, D=d, DH=d // heads, KV_PROJECTED=kv_projected, PRECISION=_common.dot_precision(xq.dtype),
        )
    return out
