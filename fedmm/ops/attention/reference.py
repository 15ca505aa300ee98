"""PyTorch references of gated cross-attention (docs/ARCHITECTURE.md §4): the ``naive`` and ``torch`` backends.

:func:`gated_cross_attention_reference` spells the softmax out (float64-friendly) and is the
oracle of the Triton kernels and of :func:`gated_cross_attention_torch`, the SDPA path that
``auto`` uses off CUDA. Arguments as :func:`fedmm.ops.gated_cross_attention` (no checks here).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gate(xq, o, wg, ug, bg):
    g = torch.sigmoid(xq @ wg + o @ ug + bg)  # [B, Lq, d]
    return g * o + (1 - g) * xq


def _heads(xq, xkv, wq, wk, wv, heads):
    """Query, key and value projections split into heads."""
    B, Lq, d = xq.shape
    Lk, dh = xkv.shape[1], d // heads
    q = (xq @ wq).view(B, Lq, heads, dh).transpose(1, 2)  # [B, H, Lq, dh]
    k = (xkv @ wk).view(B, Lk, heads, dh).transpose(1, 2)  # [B, H, Lk, dh]
    v = (xkv @ wv).view(B, Lk, heads, dh).transpose(1, 2)  # [B, H, Lk, dh]
    return q, k, v


def gated_cross_attention_reference(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads):
    """Explicit-softmax reference, the ``naive`` backend (float64-friendly; the test oracle)."""
    q, k, v = _heads(xq, xkv, wq, wk, wv, heads)  # [B, H, Lq, dh], [B, H, Lk, dh] x 2
    B, Lq, d = xq.shape
    any_valid = kv_mask.any(dim=1)  # [B]
    # rows with no valid key: softmax over all keys (finite), then zeroed below
    mask = kv_mask | ~any_valid[:, None]  # [B, Lk]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # [B, H, Lq, Lk]
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1) * any_valid[:, None, None, None].to(scores.dtype)
    o = (probs @ v).transpose(1, 2).reshape(B, Lq, d) @ wo  # [B, Lq, d]
    return _gate(xq, o, wg, ug, bg)


def gated_cross_attention_torch(xq, xkv, kv_mask, wq, wk, wv, wo, wg, ug, bg, heads):
    """PyTorch fallback, the ``torch`` backend: scaled_dot_product_attention + gate epilogue."""
    q, k, v = _heads(xq, xkv, wq, wk, wv, heads)  # [B, H, Lq, dh], [B, H, Lk, dh] x 2
    B, Lq, d = xq.shape
    any_valid = kv_mask.any(dim=1)  # [B]
    mask = (kv_mask | ~any_valid[:, None])[:, None, None, :]  # [B, 1, 1, Lk]
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, Lq, dh]
    attn = attn * any_valid[:, None, None, None].to(attn.dtype)
    o = attn.transpose(1, 2).reshape(B, Lq, d) @ wo  # [B, Lq, d]
    return _gate(xq, o, wg, ug, bg)
