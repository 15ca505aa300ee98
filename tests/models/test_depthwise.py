"""The small-map depthwise weight gradient against nn.Conv2d (float64, fresh random inputs)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from fedmm.models.depthwise import DepthwiseConv2d, depthwise_weight_grad, shift_matrices, use_small_map_depthwise
from fedmm.models.encoders import ImageEncoder

CASES = [  # (channels, H, W, kernel, stride, padding)
    (8, 4, 4, 5, 1, 2), (6, 2, 2, 5, 1, 2), (5, 4, 4, 5, 2, 2), (4, 3, 3, 3, 1, 1),
    (7, 1, 1, 3, 1, 1), (3, 4, 3, 3, 2, 0), (9, 4, 4, 3, 1, 0), (2, 2, 3, 5, 1, 2),
]


def _pair(seed: int, case, bias: bool, channels_last: bool):
    c, h, w, k, s, p = case
    torch.manual_seed(seed)
    ref = nn.Conv2d(c, c, k, s, p, groups=c, bias=bias).double()
    fast = copy.deepcopy(ref)
    assert use_small_map_depthwise(fast) == 1 and type(fast) is DepthwiseConv2d
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return ref, fast, x


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradients_match_conv2d(case, bias, channels_last):
    for seed in range(3):
        ref, fast, x = _pair(seed, case, bias, channels_last)
        assert fast._fast(x)
        outs, grads = [], []
        for m in (ref, fast):
            xi = x.clone().requires_grad_(True)
            y = m(xi)
            g = torch.randn_like(y, generator=torch.Generator().manual_seed(seed))
            y.backward(g)
            outs.append(y.detach())
            grads.append([xi.grad, m.weight.grad] + ([m.bias.grad] if bias else []))
        torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
        for got, want in zip(grads[1], grads[0]):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_weight_grad_formula_float32_against_library():
    torch.manual_seed(5)
    x = torch.randn(16, 240, 4, 4)
    w = torch.randn(240, 1, 5, 5)
    g = torch.randn(16, 240, 4, 4)
    want = torch.ops.aten.convolution_backward(g.double(), x.double(), w.double(), None, [1, 1], [2, 2], [1, 1],
                                               False, [0, 0], 240, [False, True, False])[1]
    got = depthwise_weight_grad(x, g, (5, 5), (1, 1), (2, 2))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_shift_matrices_count_the_taps_inside_the_map():
    s = shift_matrices(2, 2, 5, 1, 2, torch.float64, "cpu")   # [25, 4, 4]
    assert s.shape == (25, 4, 4)
    assert s.sum() == 16           # every output reads every input pixel exactly once
    assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_library_path_where_the_fast_one_does_not_apply():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, 1, 1, groups=4)
    use_small_map_depthwise(conv)
    assert not conv._fast(torch.randn(2, 4, 8, 8))             # map larger than SMALL_MAP
    with torch.no_grad():
        assert not conv._fast(torch.randn(2, 4, 4, 4))          # no gradient wanted
    pointwise = nn.Conv2d(4, 8, 1)
    assert use_small_map_depthwise(pointwise) == 0 and type(pointwise) is nn.Conv2d


def test_image_encoder_same_state_and_gradients_either_way():
    torch.manual_seed(1)
    fast, ref = ImageEncoder(fast_depthwise=True).double(), ImageEncoder(fast_depthwise=False).double()
    assert fast.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(fast.state_dict())
    assert sum(type(m) is DepthwiseConv2d for m in fast.modules()) > 0
    assert not any(type(m) is DepthwiseConv2d for m in ref.modules())
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)   # the features in float64 (forward() casts to float32)
    for m in (fast, ref):
        m.train()
        m.features(x).pow(2).mean().backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
