"""Shared pieces of the gated cross-attention kernels.

Host side: output allocation, tile configuration, a launcher that retries with
smaller tiles when a configuration exceeds the GPU's shared memory.
Device side (``@triton.jit`` helpers inlined into the kernels):

* :func:`xw` -- ``x[rows, :D] @ W[:, cols]`` with the reduction streamed in
  ``BLOCK_C``-row chunks of W, so no ``d x d`` weight tile is held at once.
* :func:`attend_head` -- one head of softmax(Q K^T / sqrt(dh)) V for a block of
  query rows: online softmax over key blocks, key padding mask, rows with no
  valid key give exactly 0 (docs/ARCHITECTURE.md §4).

Layout conventions: activations are ``[B, L, d]`` with unit stride on the last
axis (batch and row strides are passed in), weights are contiguous ``[d, d]``
applied as ``x @ W``; head ``h`` owns columns ``h*dh : (h+1)*dh``.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

TILE_BYTES = 32 * 1024  # budget for one streamed weight tile
# Tuning hook: entries override the computed tile configs. "rows" applies to both row-block
# kernels, then "fwd" (forward) or "gate_bwd" (gate backward) to that one only; "attn_bwd" to the
# attention backward.
CONFIG_OVERRIDES: dict[str, dict] = {}


def empty(shape, *, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Allocate a kernel output buffer (uninitialised: every element is written by a kernel)."""
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` precision, following PyTorch's float32 matmul policy: exact fp32 products by
    default, TF32 after ``torch.set_float32_matmul_precision("high")``; 16-bit inputs ignore it."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def block_len(n: int, cap: int) -> int:
    """Power-of-two tile length covering ``n`` (at least 16, the tensor-core minimum), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(n)))


def tile_config(Lq: int, Lk: int, d: int, heads: int, dtype: torch.dtype, *, kernel: str) -> dict:
    """Tiles of the row-block kernels: ``kernel`` is "fwd" (forward) or "gate_bwd" (gate backward).

    BLOCK_DV: value columns of a head handled per attention pass (a head wider
    than that is processed in several passes, recomputing its scores);
    BLOCK_C: weight rows streamed per step of :func:`xw`.
    """
    if kernel not in ("fwd", "gate_bwd"):
        raise ValueError(f"unknown row-block kernel {kernel!r}")
    block_d = block_len(d, 1 << 30)
    block_dh = block_len(d // heads, 1 << 30)
    rows = max(16, TILE_BYTES // (block_d * dtype.itemsize))  # weight rows per TILE_BYTES tile
    q_cap = 64 if block_d <= 128 else 32
    if dtype == torch.float32:  # fp32 dots run on FMA units with larger register tiles: halve the rows
        q_cap //= 2
    cfg = dict(
        BLOCK_Q=block_len(Lq, q_cap),
        BLOCK_K=block_len(Lk, 64 if block_dh <= 128 else 32),
        BLOCK_D=block_d,
        BLOCK_DH=block_dh,
        BLOCK_DV=min(block_dh, rows),
        BLOCK_C=min(block_d, rows),
        num_warps=4 if block_d <= 64 else 8,
        num_stages=2,
    )
    cfg.update(CONFIG_OVERRIDES.get("rows", {}))
    cfg.update(CONFIG_OVERRIDES.get(kernel, {}))
    return cfg


def launch_device(t: torch.Tensor):
    """Context making ``t``'s GPU current for the launch (no-op for CPU / interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


_FITTING: dict = {}  # (kernel, requested config) -> config that compiled within the GPU's limits


def launch(kernel, grid, args: tuple, cfg: dict, shrinkable: tuple[str, ...], **constants) -> None:
    """``kernel[grid](*args, **constants, **cfg)``; on OutOfResources retry with
    ``num_stages=1`` and then halved ``shrinkable`` tiles (down to 16).

    ``grid`` is a callable of the launch meta-parameters.
    """
    key = (kernel, tuple(sorted(cfg.items())), tuple(sorted(constants.items())))
    cfg = dict(_FITTING.get(key, cfg))
    while True:
        try:
            kernel[grid](*args, **constants, **cfg)
            _FITTING[key] = cfg
            return
        except OutOfResources:
            if cfg["num_stages"] > 1:
                cfg["num_stages"] = 1
                continue
            big = [k for k in shrinkable if cfg[k] > 16]
            if not big:
                raise
            name = max(big, key=lambda k: cfg[k])
            cfg[name] //= 2


@triton.jit
def xw(
    acc,  # [BLOCK_R, BLOCK_N] fp32, added to
    x_ptr, row_off, row_ok,  # row_off [BLOCK_R] element offsets of the rows of x, row_ok [BLOCK_R]
    w_ptr, col0, ncols,  # columns col0 .. col0+ncols of W [D, D]; columns beyond ncols count as 0
    D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, PRECISION: tl.constexpr,
):
    """``acc + x[rows, :D] @ W[:, col0:col0+ncols]``, taking BLOCK_C rows of W at a time."""
    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < ncols
    for c0 in tl.static_range(0, D, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < D
        x = tl.load(x_ptr + row_off[:, None] + offs_c[None, :], mask=row_ok[:, None] & c_ok[None, :], other=0.0)
        w = tl.load(w_ptr + offs_c[:, None] * D + col0 + offs_n[None, :], mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(x, w, input_precision=PRECISION)  # [BLOCK_R, BLOCK_N]
    return acc


@triton.jit
def attend_head(
    q_h,  # [BLOCK_Q, BLOCK_DH] queries of head h (input dtype, not yet scaled)
    xkv_ptr, wk_ptr, wv_ptr,  # read when KV_PROJECTED is False: K_h, V_h = xkv @ W{k,v}[:, head h]
    k_ptr, v_ptr,  # read when KV_PROJECTED is True: precomputed K, V (same strides)
    mask_ptr, b, h, v0, Lk, qk_scale,  # v0: first value column (within the head) of this pass
    stride_xkv_b, stride_xkv_l, stride_kv_b, stride_kv_l, stride_m_b,
    D: tl.constexpr, DH: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_DH: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_C: tl.constexpr,
    KV_PROJECTED: tl.constexpr, PRECISION: tl.constexpr,
):
    """Return ``(A_h V_h[:, v0:v0+BLOCK_DV] [BLOCK_Q, BLOCK_DV] fp32, lse2 [BLOCK_Q] fp32)``.

    ``qk_scale = log2(e) / sqrt(dh)``; ``lse2`` is the base-2 log-sum-exp of the
    scaled scores, so ``P = exp2(q k^T * qk_scale - lse2)``. Rows with no valid
    key return zeros and ``lse2 = 0`` (then ``P`` recomputed from it is 0, since
    every score of such a row is -inf).
    """
    dtype = q_h.dtype
    offs_dh = tl.arange(0, BLOCK_DH)
    offs_dv = tl.arange(0, BLOCK_DV)
    dh_ok = offs_dh < DH
    dv_ok = (v0 + offs_dv) < DH
    dv_cols = tl.minimum(DH - v0, BLOCK_DV)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)  # running max   [BLOCK_Q]
    l_i = tl.zeros([BLOCK_Q], tl.float32)  # running sum   [BLOCK_Q]
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], tl.float32)  # [BLOCK_Q, BLOCK_DV]
    for k0 in range(0, Lk, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_in = offs_k < Lk
        k_ok = k_in & (tl.load(mask_ptr + b * stride_m_b + offs_k, mask=k_in, other=0) != 0)  # [BLOCK_K]
        if KV_PROJECTED:
            kv_rows = b * stride_kv_b + offs_k[:, None] * stride_kv_l + h * DH
            k_h = tl.load(k_ptr + kv_rows + offs_dh[None, :], mask=k_in[:, None] & dh_ok[None, :], other=0.0)
            v_h = tl.load(v_ptr + kv_rows + v0 + offs_dv[None, :], mask=k_in[:, None] & dv_ok[None, :], other=0.0)
        else:
            x_rows = b * stride_xkv_b + offs_k * stride_xkv_l  # [BLOCK_K]
            k_h = xw(tl.zeros([BLOCK_K, BLOCK_DH], tl.float32), xkv_ptr, x_rows, k_in, wk_ptr, h * DH, DH,
                     D, BLOCK_DH, BLOCK_C, PRECISION).to(dtype)  # [BLOCK_K, BLOCK_DH]
            v_h = xw(tl.zeros([BLOCK_K, BLOCK_DV], tl.float32), xkv_ptr, x_rows, k_in, wv_ptr, h * DH + v0, dv_cols,
                     D, BLOCK_DV, BLOCK_C, PRECISION).to(dtype)  # [BLOCK_K, BLOCK_DV]
        s = tl.dot(q_h, tl.trans(k_h), input_precision=PRECISION) * qk_scale  # [BLOCK_Q, BLOCK_K]
        s = tl.where(k_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no valid key seen yet: keep exp2 finite
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])  # [BLOCK_Q, BLOCK_K]
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(dtype), v_h, input_precision=PRECISION)
        m_i = m_new
    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    lse2 = tl.where(has_key, m_i + tl.log2(l_safe), 0.0)
    return acc / l_safe[:, None], lse2
