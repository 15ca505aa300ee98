"""CPU microbenchmarks of the gated cross-attention dispatch overhead (pytest-benchmark).

    pytest benchmarks/bench_dispatch.py --benchmark-columns=mean,median,ops

Compares ``fedmm.ops.gated_cross_attention(..., backend="auto")`` with a direct
call of the PyTorch path it selects on CPU, on a tiny problem where the
dispatch cost (input checks, backend resolution) is visible, plus
``resolve_backend`` alone. Not part of the CI test run (testpaths = tests).
"""
from __future__ import annotations

import pytest
import torch

from fedmm.ops import resolve_backend
from fedmm.ops.attention import gated_cross_attention
from fedmm.ops.attention.reference import gated_cross_attention_torch


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)  # tiny tensors: keep thread-pool wake-ups out of the measurement
    gen = torch.Generator().manual_seed(0)
    d, heads = 16, 2
    xq = torch.randn(1, 2, d, generator=gen)
    xkv = torch.randn(1, 3, d, generator=gen)
    weights = [torch.randn(d, d, generator=gen) / d**0.5 for _ in range(6)]
    bg = torch.randn(d, generator=gen)
    mask = torch.ones(1, 3, dtype=torch.bool)
    return (xq, xkv, mask, *weights, bg, heads)


def test_direct_torch_path(benchmark, tiny):
    benchmark(gated_cross_attention_torch, *tiny)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_dispatch(benchmark, tiny, backend):
    out = benchmark(gated_cross_attention, *tiny, backend=backend)
    assert torch.equal(out, gated_cross_attention_torch(*tiny))


def test_resolve_backend_only(benchmark):
    available = {"triton": lambda: "auto uses Triton only on CUDA tensors", "torch": lambda: None}
    assert benchmark(resolve_backend, "gated_cross_attention", "auto", available) == "torch"
