"""Backward, part 2: attention backward (dQ, dK, dV) by recomputation.

The probabilities are rebuilt from Q, K and the per-row base-2 log-sum-exp
written by part 1, ``P = exp2(q k^T * log2(e)/sqrt(dh) - lse2)``; they are never
stored. With ``dA`` = dL/d concat_heads(A V) and ``delta = rowsum(dA_h * attn_h)``::

    dV = P^T dA_h      dS = P * (dA_h V^T - delta)
    dK = dS^T Q / sqrt(dh)      dQ = dS K / sqrt(dh)

Masked keys and rows with no valid key have P = 0 exactly, hence zero dK, dV
contributions. One program per (batch, head, key block) accumulates dK and dV
over all query blocks; when a single key block covers Lk it also finishes dQ,
otherwise a second kernel (one program per (batch, head, query block)) does,
so no atomics are used and the result is deterministic.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fedmm.kernels import _common


@triton.jit
def _score_grad(q_h, k_h, v_h, da_h, lse2, delta, valid, qk_scale, PRECISION: tl.constexpr):
    """Return ``(P, dS)`` [BLOCK_Q, BLOCK_K] fp32 for one (query block, key block) tile."""
    s = tl.dot(q_h, tl.trans(k_h), input_precision=PRECISION) * qk_scale
    s = tl.where(valid, s, float("-inf"))
    p = tl.exp2(s - lse2[:, None])
    dp = tl.dot(da_h, tl.trans(v_h), input_precision=PRECISION)
    return p, p * (dp - delta[:, None])


@triton.jit
def _load_query_side(q_ptr, attn_ptr, dattn_ptr, lse_ptr, b, h, offs_q, offs_dh, Lq, stride_q_b, stride_q_l,
                     H: tl.constexpr, DH: tl.constexpr):
    """Q_h, dA_h [BLOCK_Q, BLOCK_DH], lse2 and delta [BLOCK_Q] of a query block."""
    q_ok = offs_q < Lq
    m = q_ok[:, None] & (offs_dh < DH)[None, :]
    head = (b * stride_q_b + offs_q * stride_q_l)[:, None] + h * DH + offs_dh[None, :]
    q_h = tl.load(q_ptr + head, mask=m, other=0.0)
    da_h = tl.load(dattn_ptr + head, mask=m, other=0.0)
    a_h = tl.load(attn_ptr + head, mask=m, other=0.0)
    lse2 = tl.load(lse_ptr + (b * H + h) * Lq + offs_q, mask=q_ok, other=0.0)
    delta = tl.sum(da_h.to(tl.float32) * a_h.to(tl.float32), 1)
    return q_h, da_h, lse2, delta


@triton.jit
def _load_key_side(k_ptr, v_ptr, mask_ptr, b, h, offs_k, offs_dh, Lk, stride_kv_b, stride_kv_l, stride_m_b,
                   DH: tl.constexpr):
    """K_h, V_h [BLOCK_K, BLOCK_DH] and the key validity [BLOCK_K] of a key block."""
    k_in = offs_k < Lk
    k_ok = k_in & (tl.load(mask_ptr + b * stride_m_b + offs_k, mask=k_in, other=0) != 0)
    m = k_in[:, None] & (offs_dh < DH)[None, :]
    head = (b * stride_kv_b + offs_k * stride_kv_l)[:, None] + h * DH + offs_dh[None, :]
    return tl.load(k_ptr + head, mask=m, other=0.0), tl.load(v_ptr + head, mask=m, other=0.0), k_ok


@triton.jit
def _attn_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, attn_ptr, dattn_ptr, lse_ptr,
    dq_ptr, dk_ptr, dv_ptr,
    Lq, Lk, sm_scale, qk_scale,
    stride_q_b, stride_q_l, stride_kv_b, stride_kv_l, stride_m_b,
    stride_dq_b, stride_dq_l, stride_dkv_b, stride_dkv_l,
    H: tl.constexpr, DH: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DH: tl.constexpr,
    WRITE_DQ: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_kb = tl.cdiv(Lk, BLOCK_K)
    bh = pid // num_kb
    b = (bh // H).to(tl.int64)
    h = bh % H
    offs_k = (pid % num_kb) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    offs_dh = tl.arange(0, BLOCK_DH)
    dh_ok = offs_dh < DH
    k_h, v_h, k_ok = _load_key_side(k_ptr, v_ptr, mask_ptr, b, h, offs_k, offs_dh, Lk,
                                    stride_kv_b, stride_kv_l, stride_m_b, DH)
    dtype = k_h.dtype
    dk = tl.zeros([BLOCK_K, BLOCK_DH], tl.float32)
    dv = tl.zeros([BLOCK_K, BLOCK_DH], tl.float32)
    for q0 in range(0, Lq, BLOCK_Q):
        offs_q = q0 + tl.arange(0, BLOCK_Q)
        q_h, da_h, lse2, delta = _load_query_side(q_ptr, attn_ptr, dattn_ptr, lse_ptr, b, h, offs_q, offs_dh, Lq,
                                                  stride_q_b, stride_q_l, H, DH)
        valid = (offs_q < Lq)[:, None] & k_ok[None, :]
        p, ds = _score_grad(q_h, k_h, v_h, da_h, lse2, delta, valid, qk_scale, PRECISION)
        ds = ds.to(dtype)
        dv += tl.dot(tl.trans(p.to(dtype)), da_h, input_precision=PRECISION)
        dk += tl.dot(tl.trans(ds), q_h, input_precision=PRECISION)
        if WRITE_DQ:  # this program saw every key of the rows: dQ is complete
            dq = tl.dot(ds, k_h, input_precision=PRECISION) * sm_scale  # [BLOCK_Q, BLOCK_DH]
            dq_offs = (b * stride_dq_b + offs_q * stride_dq_l)[:, None] + h * DH + offs_dh[None, :]
            tl.store(dq_ptr + dq_offs, dq.to(dtype), mask=(offs_q < Lq)[:, None] & dh_ok[None, :])
    dkv_offs = (b * stride_dkv_b + offs_k * stride_dkv_l)[:, None] + h * DH + offs_dh[None, :]
    dkv_mask = (offs_k < Lk)[:, None] & dh_ok[None, :]
    tl.store(dk_ptr + dkv_offs, (dk * sm_scale).to(dtype), mask=dkv_mask)
    tl.store(dv_ptr + dkv_offs, dv.to(dtype), mask=dkv_mask)


@triton.jit
def _attn_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, attn_ptr, dattn_ptr, lse_ptr, dq_ptr,
    Lq, Lk, sm_scale, qk_scale,
    stride_q_b, stride_q_l, stride_kv_b, stride_kv_l, stride_m_b, stride_dq_b, stride_dq_l,
    H: tl.constexpr, DH: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DH: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_qb = tl.cdiv(Lq, BLOCK_Q)
    bh = pid // num_qb
    b = (bh // H).to(tl.int64)
    h = bh % H
    offs_q = (pid % num_qb) * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BLOCK_Q]
    offs_dh = tl.arange(0, BLOCK_DH)
    q_h, da_h, lse2, delta = _load_query_side(q_ptr, attn_ptr, dattn_ptr, lse_ptr, b, h, offs_q, offs_dh, Lq,
                                              stride_q_b, stride_q_l, H, DH)
    dtype = q_ptr.dtype.element_ty
    dq = tl.zeros([BLOCK_Q, BLOCK_DH], tl.float32)
    for k0 in range(0, Lk, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_h, v_h, k_ok = _load_key_side(k_ptr, v_ptr, mask_ptr, b, h, offs_k, offs_dh, Lk,
                                        stride_kv_b, stride_kv_l, stride_m_b, DH)
        valid = (offs_q < Lq)[:, None] & k_ok[None, :]
        _, ds = _score_grad(q_h, k_h, v_h, da_h, lse2, delta, valid, qk_scale, PRECISION)
        dq += tl.dot(ds.to(dtype), k_h, input_precision=PRECISION)
    dq_offs = (b * stride_dq_b + offs_q * stride_dq_l)[:, None] + h * DH + offs_dh[None, :]
    tl.store(dq_ptr + dq_offs, (dq * sm_scale).to(dtype), mask=(offs_q < Lq)[:, None] & (offs_dh < DH)[None, :])


def attn_bwd_config(Lq: int, Lk: int, dh: int, dtype: torch.dtype) -> dict:
    """Tiles by head width (keeps the dK/dV accumulators and K/V tiles modest); halved rows for fp32."""
    block_dh = _common.block_len(dh, 1 << 30)
    block_q, block_k, warps = {16: (64, 128, 4), 32: (64, 128, 4), 64: (64, 64, 4), 128: (32, 64, 8)}.get(
        block_dh, (32, 32, 8))
    if dtype == torch.float32:
        block_q, block_k = max(16, block_q // 2), min(block_k, 64)
    cfg = dict(BLOCK_Q=_common.block_len(Lq, block_q), BLOCK_K=_common.block_len(Lk, block_k),
               num_warps=warps, num_stages=2)
    cfg.update(_common.CONFIG_OVERRIDES.get("attn_bwd", {}))
    return cfg


def launch_attn_bwd(q, k, v, kv_mask, attn, dattn, lse2, dq, dk, dv, heads: int) -> None:
    """Write dQ into ``dq`` [B, Lq, d] and dK, dV into ``dk``, ``dv`` [B, Lk, d] (strided views allowed).

    ``q``, ``attn`` and ``dattn`` share strides, as do ``k``/``v`` and ``dk``/``dv``.
    """
    B, Lq, d = q.shape
    Lk = k.shape[1]
    assert q.stride() == attn.stride() == dattn.stride() and k.stride() == v.stride() and dk.stride() == dv.stride()
    dh = d // heads
    cfg = attn_bwd_config(Lq, Lk, dh, q.dtype)
    block_k = cfg["BLOCK_K"]
    num_kb = triton.cdiv(Lk, block_k)
    mask = kv_mask.view(torch.uint8)  # [B, Lk]
    scales = (1.0 / math.sqrt(dh), math.log2(math.e) / math.sqrt(dh))
    constants = dict(H=heads, DH=dh, BLOCK_DH=_common.block_len(dh, 1 << 30), PRECISION=_common.dot_precision(q.dtype))
    with _common.launch_device(q):
        _common.launch(  # BLOCK_K stays: it decides whether this kernel completes dQ
            _attn_bwd_dkdv_kernel, lambda meta: (B * heads * num_kb,),
            (q, k, v, mask, attn, dattn, lse2, dq, dk, dv, Lq, Lk, *scales,
             q.stride(0), q.stride(1), k.stride(0), k.stride(1), mask.stride(0),
             dq.stride(0), dq.stride(1), dk.stride(0), dk.stride(1)),
            cfg, shrinkable=("BLOCK_Q",), WRITE_DQ=num_kb == 1, **constants,
        )
        if num_kb > 1:
            _common.launch(
                _attn_bwd_dq_kernel, lambda meta: (B * heads * triton.cdiv(Lq, meta["BLOCK_Q"]),),
                (q, k, v, mask, attn, dattn, lse2, dq, Lq, Lk, *scales,
                 q.stride(0), q.stride(1), k.stride(0), k.stride(1), mask.stride(0), dq.stride(0), dq.stride(1)),
                cfg, shrinkable=("BLOCK_Q", "BLOCK_K"), **constants,
            )
