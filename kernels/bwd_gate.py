"""Backward, part 1: recompute the attention and back-propagate through the gate.

One program per (batch element, block of query rows), the same tiling as the
forward. It recomputes ``attn = concat_heads(A V)`` with Q, K, V read from
matmul-projected buffers, rebuilds O and Z exactly as the forward does, and
writes what the rest of the backward needs::

    G      = sigmoid(xq Wg + O Ug + bg)
    dZ     = dout * (O - xq) * G * (1 - G)
    dOg    = dout * G                       (gate part of dL/dO)
    dxq    = dout * (1 - G)                 (residual part of dL/dxq)
    dattn  = dOg Wo^T + dZ (Wo Ug)^T        (= dL/dO Wo^T, since dL/dO = dOg + dZ Ug^T)
    attn, lse2                              (for dWo and the attention backward)

``dZ`` and ``dOg`` go to columns ``[d, 2d)`` and ``[2d, 3d)`` of a ``[B, Lq, 3d]``
buffer whose first ``d`` columns later receive dQ, so the weight gradients are
two wide matmuls (see ``gated_cross_attention.py``).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fedmm.kernels import _common
from fedmm.kernels._common import attend_head, xw


@triton.jit
def _gca_bwd_gate_kernel(
    xq_ptr, q_ptr, k_ptr, v_ptr, mask_ptr, dout_ptr,
    wo_ptr, woug_ptr, wg_ptr, bg_ptr,
    attn_ptr, dattn_ptr, dxq_ptr,  # [B, Lq, D] outputs, same strides as xq (as are q and dout)
    g3_ptr,  # [B, Lq, 3D] output: this kernel writes columns D.. (dZ | dOg)
    lse_ptr,  # [B, H, Lq] fp32 output
    Lq, Lk, qk_scale,
    stride_xq_b, stride_xq_l, stride_kv_b, stride_kv_l, stride_m_b, stride_g_b, stride_g_l,
    H: tl.constexpr, D: tl.constexpr, DH: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DH: tl.constexpr,
    BLOCK_DV: tl.constexpr, BLOCK_C: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_qb = tl.cdiv(Lq, BLOCK_Q)
    b = (pid // num_qb).to(tl.int64)
    offs_q = (pid % num_qb) * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BLOCK_Q]
    offs_d = tl.arange(0, BLOCK_D)
    offs_dh = tl.arange(0, BLOCK_DH)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_ok = offs_q < Lq
    d_ok = offs_d < D
    row_off = b * stride_xq_b + offs_q * stride_xq_l  # [BLOCK_Q]
    tile_mask = q_ok[:, None] & d_ok[None, :]
    tile = row_off[:, None] + offs_d[None, :]  # [BLOCK_Q, BLOCK_D]
    dtype = xq_ptr.dtype.element_ty

    # ---- recompute attn, O and Z (as in the forward) --------------------------------
    o_acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    z_acc = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
    for h in range(H):
        q_h = tl.load(q_ptr + row_off[:, None] + h * DH + offs_dh[None, :],
                      mask=q_ok[:, None] & (offs_dh < DH)[None, :], other=0.0)  # [BLOCK_Q, BLOCK_DH]
        for v0 in range(0, DH, BLOCK_DV):
            a_h, lse2 = attend_head(
                q_h, k_ptr, k_ptr, k_ptr, k_ptr, v_ptr, mask_ptr, b, h, v0, Lk, qk_scale,
                0, 0, stride_kv_b, stride_kv_l, stride_m_b,
                D, DH, BLOCK_Q, BLOCK_K, BLOCK_DH, BLOCK_DV, BLOCK_C, True, PRECISION,
            )
            a_h = a_h.to(dtype)  # [BLOCK_Q, BLOCK_DV]
            v_ok = (v0 + offs_dv) < DH
            tl.store(lse_ptr + (b * H + h) * Lq + offs_q, lse2, mask=q_ok)  # same value on every pass
            tl.store(attn_ptr + row_off[:, None] + h * DH + v0 + offs_dv[None, :], a_h,
                     mask=q_ok[:, None] & v_ok[None, :])
            w_offs = (h * DH + v0 + offs_dv)[:, None] * D + offs_d[None, :]  # [BLOCK_DV, BLOCK_D]
            w_mask = v_ok[:, None] & d_ok[None, :]
            o_acc += tl.dot(a_h, tl.load(wo_ptr + w_offs, mask=w_mask, other=0.0), input_precision=PRECISION)
            z_acc += tl.dot(a_h, tl.load(woug_ptr + w_offs, mask=w_mask, other=0.0), input_precision=PRECISION)
    z_acc = xw(z_acc, xq_ptr, row_off, q_ok, wg_ptr, 0, D, D, BLOCK_D, BLOCK_C, PRECISION)
    bg = tl.load(bg_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    g = tl.sigmoid(z_acc + bg[None, :])  # [BLOCK_Q, BLOCK_D]

    # ---- gate backward -------------------------------------------------------------
    dout = tl.load(dout_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
    xq = tl.load(xq_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)  # [BLOCK_Q, BLOCK_D]
    dz = (dout * (o_acc - xq) * g * (1.0 - g)).to(dtype)  # dL/dZ
    dog = (dout * g).to(dtype)  # dL/dO through the gate's G*O term
    tl.store(dxq_ptr + tile, (dout * (1.0 - g)).to(dtype), mask=tile_mask)
    g_tile = (b * stride_g_b + offs_q * stride_g_l)[:, None] + offs_d[None, :]
    tl.store(g3_ptr + g_tile + D, dz, mask=tile_mask)
    tl.store(g3_ptr + g_tile + 2 * D, dog, mask=tile_mask)

    # ---- dattn[:, cols] = dOg Wo[cols, :]^T + dZ (Wo Ug)[cols, :]^T, BLOCK_DV columns at a time ----
    for c0 in range(0, D, BLOCK_DV):
        c_ok = (c0 + offs_dv) < D
        wt_offs = (c0 + offs_dv)[None, :] * D + offs_d[:, None]  # W[c0 + j, i] at [i, j]  [BLOCK_D, BLOCK_DV]
        wt_mask = d_ok[:, None] & c_ok[None, :]
        da = tl.dot(dog, tl.load(wo_ptr + wt_offs, mask=wt_mask, other=0.0), input_precision=PRECISION)
        da += tl.dot(dz, tl.load(woug_ptr + wt_offs, mask=wt_mask, other=0.0), input_precision=PRECISION)
        tl.store(dattn_ptr + row_off[:, None] + c0 + offs_dv[None, :], da.to(dtype), mask=q_ok[:, None] & c_ok[None, :])


def launch_gate_bwd(xq, q, k, v, kv_mask, dout, wo, woug, wg, bg, heads: int):
    """Run part 1 of the backward.

    ``q`` [B, Lq, d] and ``k``, ``v`` [B, Lk, d] (possibly strided views) are the
    projections. Returns ``attn, dattn, dxq`` [B, Lq, d], ``g3`` [B, Lq, 3d] with
    columns ``d:`` filled (dZ | dOg) and ``lse2`` [B, heads, Lq] fp32.
    """
    B, Lq, d = xq.shape
    Lk = k.shape[1]
    assert q.stride() == xq.stride() == dout.stride() and k.stride() == v.stride()
    cfg = _common.tile_config(Lq, Lk, d, heads, xq.dtype, kernel="gate_bwd")
    attn, dattn, dxq = (_common.empty((B, Lq, d), like=xq) for _ in range(3))
    g3 = _common.empty((B, Lq, 3 * d), like=xq)
    lse2 = _common.empty((B, heads, Lq), like=xq, dtype=torch.float32)
    mask = kv_mask.view(torch.uint8)  # [B, Lk]
    args = (
        xq, q, k, v, mask, dout, wo, woug, wg, bg, attn, dattn, dxq, g3, lse2,
        Lq, Lk, math.log2(math.e) / math.sqrt(d // heads),
        xq.stride(0), xq.stride(1), k.stride(0), k.stride(1), mask.stride(0), g3.stride(0), g3.stride(1),
    )
    with _common.launch_device(xq):
        _common.launch(
            _gca_bwd_gate_kernel, lambda meta: (B * triton.cdiv(Lq, meta["BLOCK_Q"]),), args, cfg,
            shrinkable=("BLOCK_Q", "BLOCK_K", "BLOCK_DV", "BLOCK_C"),
            H=heads, D=d, DH=d // heads, PRECISION=_common.dot_precision(xq.dtype),
        )
    return attn, dattn, dxq, g3, lse2
