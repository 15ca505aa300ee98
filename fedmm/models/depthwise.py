"""Depthwise convolutions on small feature maps with a fast weight gradient (CPU).

MobileNetV3 on 64 x 64 images ends in 5 x 5 depthwise convolutions over 4 x 4 and 2 x 2
maps. On CPU the library's weight gradient of those layers takes 10-60x its forward
(benchmarks/README.md, "Depthwise weight gradient"): most of an image step's backward.
Over a map of ``H*W`` pixels a depthwise convolution is, per channel, a linear map
``out_c = (sum_t w[c, t] S_t) x_c`` with fixed 0/1 shift matrices ``S_t`` [Ho*Wo, H*W],
so its weight gradient is

    dL/dw[c, t] = sum_b  grad_c[b]^T S_t x_c[b]  =  < sum_b grad_c[b] x_c[b]^T , S_t >,

one batched matrix product ([C, Ho*Wo, B] @ [C, B, H*W]) and one small product with the
stacked ``S`` [k*k, Ho*Wo*H*W]. The forward and the input gradient stay the library's.
:class:`DepthwiseConv2d` uses this path only where it is the faster one (CPU, maps of at
most :data:`SMALL_MAP` pixels, stride/padding of any size, dilation 1); everywhere else,
and as the reference the tests compare it with, it is ``nn.Conv2d``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.grad import conv2d_input

SMALL_MAP = 16   # input pixels (H*W) up to which the shift-matrix weight gradient is used


def shift_matrices(h: int, w: int, k: int, stride: int, padding: int, dtype, device) -> torch.Tensor:
    """``S`` [k*k, Ho*Wo, h*w]: S[t, o, i] = 1 where kernel tap t reads input pixel i for output o."""
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    taps = torch.arange(k, device=device)
    y = (torch.arange(ho, device=device) * stride - padding).view(1, 1, ho, 1) + taps.view(k, 1, 1, 1)  # [k,1,ho,1]
    x = (torch.arange(wo, device=device) * stride - padding).view(1, 1, 1, wo) + taps.view(1, k, 1, 1)  # [1,k,1,wo]
    y, x = torch.broadcast_tensors(y, x)                                                           # [k,k,ho,wo]
    valid = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    src = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).reshape(-1, 1)                               # [k*k*ho*wo, 1]
    s = torch.zeros(k * k * ho * wo, h * w, dtype=dtype, device=device)
    s.scatter_(1, src, valid.reshape(-1, 1).to(dtype))
    return s.view(k * k, ho * wo, h * w)


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int],
                          stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """dL/dweight [C, 1, kh, kw] of a depthwise convolution (dilation 1) of ``x`` [B, C, H, W]
    whose output's gradient is ``grad_out`` [B, C, Ho, Wo]; square kernels, equal strides and paddings."""
    (k, kw), (s, sw), (p, pw) = kernel, stride, padding
    if k != kw or s != sw or p != pw:
        raise ValueError("depthwise_weight_grad: square kernel, stride and padding only")
    b, c, h, w = x.shape
    ho, wo = grad_out.shape[2:]
    outer = torch.bmm(grad_out.permute(1, 2, 3, 0).reshape(c, ho * wo, b),
                      x.permute(1, 0, 2, 3).reshape(c, b, h * w))                     # [C, Ho*Wo, H*W]
    shifts = shift_matrices(h, w, k, s, p, x.dtype, x.device).view(k * k, -1)         # [k*k, Ho*Wo*H*W]
    return (outer.reshape(c, -1) @ shifts.T).view(c, 1, k, k)


class _SmallMapDepthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, has_bias = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv2d_input(x.shape, weight, grad_out, stride, padding, 1, x.shape[1])
        if ctx.needs_input_grad[1]:
            gw = depthwise_weight_grad(x, grad_out, weight.shape[2:], stride, padding)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad_out.sum((0, 2, 3))
        return gx, gw, gb, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) whose weight gradient on small CPU maps
    comes from :func:`depthwise_weight_grad`."""

    def _fast(self, x: torch.Tensor) -> bool:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (x.device.type == "cpu" and torch.is_grad_enabled() and self.weight.requires_grad
                and x.dim() == 4 and x.shape[2] * x.shape[3] <= SMALL_MAP and self.padding_mode == "zeros"
                and isinstance(p, tuple) and k[0] == k[1] and s[0] == s[1] and p[0] == p[1]
                and self.dilation == (1, 1) and self.groups == self.in_channels == self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return _SmallMapDepthwise.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


def use_small_map_depthwise(module: nn.Module) -> int:
    """Make every depthwise ``nn.Conv2d`` inside ``module`` a :class:`DepthwiseConv2d`, in place and
    keeping its parameters (the class changes, nothing else). Returns how many were converted."""
    n = 0
    for m in module.modules():
        if type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            m.__class__ = DepthwiseConv2d
            n += 1
    return n
