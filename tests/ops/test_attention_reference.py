"""Reference gated cross-attention (naive and SDPA paths) and backend dispatch (docs/ARCHITECTURE.md §4, §8)."""
from __future__ import annotations

import pytest
import torch

from fedmm.ops import BackendUnavailableError
from fedmm.ops.attention import gated_cross_attention
from fedmm.ops.attention.reference import gated_cross_attention_reference, gated_cross_attention_torch

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def make_inputs(B=3, Lq=5, Lk=6, d=16, heads=2, dtype=torch.float64, seed=0, fully_masked=(0,)):
    gen = torch.Generator().manual_seed(seed)
    xq = torch.randn(B, Lq, d, generator=gen, dtype=dtype)
    xkv = torch.randn(B, Lk, d, generator=gen, dtype=dtype)
    weights = [torch.randn(d, d, generator=gen, dtype=dtype) / d**0.5 for _ in range(6)]
    bg = 0.5 * torch.randn(d, generator=gen, dtype=dtype)
    mask = torch.rand(B, Lk, generator=gen) < 0.6
    mask[:, 0] = True
    mask[list(fully_masked)] = False
    return [xq, xkv, *weights, bg], mask, heads


def outputs_and_grads(fn, inputs, mask, heads, dout):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(leaves[0], leaves[1], mask, *leaves[2:], heads)
    return (out.detach(), *torch.autograd.grad(out, leaves, dout))


def rel_err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def test_naive_gradcheck_float64():
    inputs, mask, heads = make_inputs(B=2, Lq=3, Lk=4, d=8, heads=2)
    leaves = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(
        lambda *ts: gated_cross_attention_reference(ts[0], ts[1], mask, *ts[2:], heads), leaves, eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("heads", [1, 4])
def test_torch_path_matches_naive(dtype, heads):
    inputs, mask, _ = make_inputs(d=16, heads=heads, dtype=dtype, seed=heads)
    dout = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(7), dtype=dtype)
    got = outputs_and_grads(gated_cross_attention_torch, inputs, mask, heads, dout)
    ref = outputs_and_grads(gated_cross_attention_reference, [t.double() for t in inputs], mask, heads, dout.double())
    for i, (x, r) in enumerate(zip(got, ref)):
        assert rel_err(x, r) <= TOL[dtype], i


@pytest.mark.parametrize("fn", [gated_cross_attention_reference, gated_cross_attention_torch], ids=["naive", "torch"])
def test_fully_masked_rows(fn):
    """A batch element with no valid key has A = 0: out = (1 - G) * xq, no gradient reaches xkv."""
    inputs, mask, heads = make_inputs(fully_masked=(0, 2))
    dout = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out, dxq, dxkv, *_ = outputs_and_grads(fn, inputs, mask, heads, dout)
    xq, wg, bg = inputs[0], inputs[6], inputs[8]
    g = torch.sigmoid(xq @ wg + bg)
    for b in (0, 2):
        torch.testing.assert_close(out[b], ((1 - g) * xq)[b], rtol=1e-12, atol=1e-12)
        assert torch.count_nonzero(dxkv[b]) == 0
    assert torch.isfinite(dxq).all() and torch.count_nonzero(dxkv[1]) > 0


def test_masked_keys_are_ignored():
    inputs, mask, heads = make_inputs(fully_masked=())
    out = gated_cross_attention_reference(inputs[0], inputs[1], mask, *inputs[2:], heads)
    changed = inputs[1].clone()
    changed[~mask] = 1e3 * torch.randn(int((~mask).sum()), inputs[1].shape[-1], dtype=torch.float64)
    out2 = gated_cross_attention_reference(inputs[0], changed, mask, *inputs[2:], heads)
    torch.testing.assert_close(out, out2, rtol=1e-12, atol=1e-12)


def test_auto_on_cpu_uses_torch_path():
    inputs, mask, heads = make_inputs(dtype=torch.float32)
    got = gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], heads)
    assert torch.equal(got, gated_cross_attention_torch(inputs[0], inputs[1], mask, *inputs[2:], heads))
    naive = gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], heads, backend="naive")
    assert torch.equal(naive, gated_cross_attention_reference(inputs[0], inputs[1], mask, *inputs[2:], heads))


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inputs, mask, heads = make_inputs(dtype=torch.float32)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], heads, backend="triton")


def test_unknown_backend_and_bad_shapes_raise():
    inputs, mask, heads = make_inputs(dtype=torch.float32)
    xq, xkv, *rest = inputs
    with pytest.raises(ValueError, match="unknown backend"):
        gated_cross_attention(xq, xkv, mask, *rest, heads, backend="cuda")
    with pytest.raises(ValueError, match="must divide"):
        gated_cross_attention(xq, xkv, mask, *rest, 3)
    with pytest.raises(ValueError, match="kv_mask"):
        gated_cross_attention(xq, xkv, mask.float(), *rest, heads)
    with pytest.raises(ValueError, match="wo"):
        gated_cross_attention(xq, xkv, mask, *rest[:3], rest[3][:, :-1], *rest[4:], heads)
