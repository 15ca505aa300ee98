"""The whole model with the Triton attention against the PyTorch attention (forward and backward).

One model in eval mode (no dropout; modality dropout from a seeded generator), the same weights
and batch; only the fusion's attention backend differs. Compared: the logits, the gradients of
every parameter (concatenated) and those of the fusion (the attention weights), by relative
error ``||x - ref|| / ||ref||``.

GPU (skipped without CUDA): the default model (d 128, 4 heads, MobileNetV3-small on 64 px,
BERT-tiny on 48 tokens), batches of 16 with every missing-modality pattern, with and
without global vectors; float32 (Triton's exact fp32 dots against SDPA) and bf16 autocast
(both backends against a float32 reference: the Triton path may not be more than twice as
far from it as the PyTorch path, plus 1e-2). CPU: a tiny model in Triton's interpreter, float32.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from fedmm.models.model import FedMMModel, ModelConfig
from fedmm.models.surrogate import GlobalVectors

kernels = pytest.importorskip("fedmm.kernels")

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
on_interpreter = pytest.mark.skipif(
    not kernels.INTERPRETED, reason="CPU test needs TRITON_INTERPRET=1 before fedmm.kernels is imported")

C = 7


def make_batch(B, image_size, max_len, vocab, device, seed=0):
    """Random batch holding paired, image-only and text-only rows."""
    g = torch.Generator().manual_seed(seed)
    has_image = torch.tensor([True, True, False] * B, dtype=torch.bool)[:B]
    has_text = torch.tensor([True, False, True] * B, dtype=torch.bool)[:B]
    lengths = torch.randint(3, max_len + 1, (B, 1), generator=g)
    batch = {"images": torch.randint(0, 256, (B, 1, image_size, image_size), dtype=torch.uint8, generator=g),
             "input_ids": torch.randint(5, vocab, (B, max_len), generator=g),
             "attention_mask": torch.arange(max_len)[None] < lengths,
             "has_image": has_image, "has_text": has_text,
             "labels": torch.randint(0, C, (B,), generator=g)}
    return {k: v.to(device) for k, v in batch.items()}


def make_gv(d, k=6, seed=0):
    rng = np.random.default_rng(seed)
    ci = rng.standard_normal((k, d)).astype(np.float32)
    ct = rng.standard_normal((k, d)).astype(np.float32)
    return GlobalVectors(ci, ct, np.arange(k), rng.permutation(k), np.ones((k, C), np.float32),
                         np.ones((k, C), np.float32), np.zeros((k, 2 * d), np.float32))


def forward_backward(model, batch, gv, backend, amp):
    """Logits, all gradients (concatenated) and the fusion's gradients for one backend."""
    for gca in model.head.fusion.values():
        gca.backend = backend
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(1)   # the same modality dropout for every backend
    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
        out = model(batch, gv, 0.3, gen)
        loss = torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"])
    loss.backward()
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    flat = torch.cat([g.float().flatten() for _, g in named])
    fusion = torch.cat([g.float().flatten() for n, g in named if n.startswith("head.fusion.")])
    return out.logits.detach().float(), flat, fusion


def rel(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def compare(cfg: ModelConfig, B, image_size, max_len, vocab, device, use_gv, amp):
    """{name: relative error} of Triton against PyTorch (fp32), or (triton, torch) errors against
    a float32 PyTorch reference (bf16 autocast)."""
    torch.manual_seed(0)
    model = FedMMModel(cfg, vocab, C, max_len).to(device).eval()   # no dropout: the same network for every dtype
    batch = make_batch(B, image_size, max_len, vocab, device)
    gv = make_gv(cfg.d) if use_gv else None
    ref = forward_backward(model, batch, gv, "torch", amp=False)
    names = ("logits", "grads", "fusion_grads")
    tri = forward_backward(model, batch, gv, "triton", amp)
    if not amp:
        return {n: rel(a, b) for n, a, b in zip(names, tri, ref)}
    tor = forward_backward(model, batch, gv, "torch", amp)
    return {n: (rel(a, r), rel(b, r)) for n, a, b, r in zip(names, tri, tor, ref)}


pytestmark = pytest.mark.usefixtures("exact_fp32")   # tests/conftest.py


@on_interpreter
def test_interpreter_model_triton_matches_torch():
    cfg = ModelConfig(d=32, heads=2)
    errs = compare(cfg, 6, 32, 12, 300, "cpu", use_gv=True, amp=False)
    assert all(e <= 1e-4 for e in errs.values()), errs


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("use_gv", [False, True], ids=["missing_token", "surrogates"])
def test_gpu_model_triton_matches_torch_fp32(use_gv):
    errs = compare(ModelConfig(), 16, 64, 48, 2000, "cuda", use_gv, amp=False)
    assert all(e <= 1e-3 for e in errs.values()), errs


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("use_gv", [False, True], ids=["missing_token", "surrogates"])
def test_gpu_model_triton_bf16_autocast_as_close_as_torch(use_gv):
    errs = compare(ModelConfig(), 16, 64, 48, 2000, "cuda", use_gv, amp=True)
    assert all(tri <= 2 * tor + 1e-2 for tri, tor in errs.values()), errs
    assert all(tri < 0.2 for tri, _ in errs.values()), errs
