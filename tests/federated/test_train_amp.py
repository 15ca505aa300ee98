"""``train.amp`` and the device handling of :func:`train_local`.

CPU: ``amp = "none"`` trains exactly as the loop did before the switch existed (a copy of that
loop is the reference: same weights bit for bit, same loss); ``"bf16"`` on the CPU is ignored
(bit-identical to ``"none"``, one warning); an unknown mode is refused by train_local and by the
CLI's config check. GPU (skipped without CUDA): bf16 autocast reaches the model, parameters and
gradients stay float32, and the device-resident loop gives the same batches as the host one.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedmm.config import TrainConfig, load_config
from fedmm.data.encode import EncodedSplit
from fedmm.federated.mechanisms import alignment, missing_views
from fedmm.federated.mechanisms.balance import adjusted_logits, logit_adjustment
from fedmm.federated.params import ShareSpec, trainable_groups
from fedmm.federated.train import AMP_MODES, autocast_context, make_batch, make_optimizer, train_local
from fedmm.models.model import FedMMModel, ModelConfig

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
C = 3


def _model(seed=0):
    """The fusion path alone (the previous loop below has no uni-modal heads)."""
    torch.manual_seed(seed)
    return FedMMModel(ModelConfig(d=16, heads=2, unimodal_heads="none"), vocab_size=50, n_classes=C, max_len=8)


def _split(n=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g)
    return EncodedSplit(images=torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                        input_ids=torch.randint(1, 50, (n, 8), generator=g),
                        attention_mask=torch.arange(8)[None] < torch.randint(2, 9, (n, 1), generator=g),
                        has_image=u >= 0.2, has_text=(u < 0.2) | (u >= 0.4),
                        labels=torch.randint(0, C, (n,), generator=g), ids=[str(i) for i in range(n)])


def _previous_train_local(model, train, tcfg, *, generator, device, gv=None, modality_dropout=0.0, terms=(),
                          logit_adjust=None):
    """The loop as it was before ``train.amp`` (float32, batches gathered on the host), with the
    optimizer as ``make_optimizer`` builds it (fused AdamW; its own test below)."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg.lr,
                            weight_decay=tcfg.weight_decay, fused=True)
    adjust = None if logit_adjust is None else logit_adjust.to(device)
    total, steps = 0.0, 0
    for _ in range(tcfg.local_epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), tcfg.batch_size):
            batch = make_batch(train, order[start:start + tcfg.batch_size], device)
            out = model(batch, gv, modality_dropout, generator)
            logits = adjusted_logits(out.logits, adjust, out.has_image, out.has_text)   # paired rows: raw
            loss = F.cross_entropy(logits, batch["labels"])
            for term in terms:
                extra = term(model, batch, out, gv, generator)
                if extra is not None:
                    loss = loss + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
    return total / max(steps, 1)


def _train(amp, device="cpu", fn=train_local):
    """Train a fresh tiny model with dropout, logit adjustment and two mechanism terms."""
    model, split = _model().to(device), _split()
    tcfg = replace(TrainConfig(), local_epochs=2, batch_size=8, amp=amp)
    adjust = logit_adjustment(split.labels, C, 1.0)
    terms = [missing_views.MissingViewsTerm(0.5, adjust), alignment.AlignmentTerm(0.1, 0.1)]
    kw = dict(generator=torch.Generator().manual_seed(3), device=device, modality_dropout=0.3, terms=terms,
              logit_adjust=adjust)
    torch.manual_seed(4)   # dropout draws
    if fn is train_local:
        loss = train_local(model, split, tcfg, groups=trainable_groups(model, ShareSpec()), **kw).loss
    else:
        loss = fn(model, split, tcfg, **kw)
    return loss, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_amp_none_is_bit_identical_to_the_previous_loop():
    loss, state = _train("none")
    ref_loss, ref_state = _train("none", fn=_previous_train_local)
    assert loss == ref_loss
    assert _same(state, ref_state)


def test_fused_adamw_matches_the_reference_loop_in_float64():
    """make_optimizer's fused AdamW against torch's for-loop AdamW, fresh random tensors and gradients."""
    g = torch.Generator().manual_seed(11)
    shapes = [(7, 5), (13,), (3, 4, 2), (1,)]
    model = torch.nn.ParameterList([torch.randn(s, generator=g, dtype=torch.float64) for s in shapes])
    fast = list(model.parameters())
    ref = [p.detach().clone().requires_grad_(True) for p in fast]
    opt = make_optimizer(model, TrainConfig(lr=3e-2, weight_decay=1e-2), "cpu")
    assert opt.defaults["fused"]
    ref_opt = torch.optim.AdamW(ref, lr=3e-2, weight_decay=1e-2, foreach=False, fused=False)
    for _ in range(10):
        for p, q in zip(fast, ref):
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            q.grad = p.grad.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(fast, ref):
        assert not torch.equal(p, torch.zeros_like(p))
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_amp_bf16_on_cpu_is_ignored_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="fedmm.train"):
        loss, state = _train("bf16")
        _train("bf16")
    ref_loss, ref_state = _train("none")
    assert loss == ref_loss and _same(state, ref_state)
    warnings = [r for r in caplog.records if "train.amp=bf16" in r.getMessage()]
    assert len(warnings) <= 1   # once per process (an earlier test may have triggered it already)
    assert isinstance(autocast_context("bf16", "cpu"), type(autocast_context("none", "cpu")))


def test_unknown_amp_is_refused():
    with pytest.raises(ValueError, match="train.amp"):
        _train("fp16")
    assert AMP_MODES == ("none", "bf16")
    assert load_config(None, ["train.amp=bf16"]).train.amp == "bf16"
    assert load_config(None, []).train.amp == "none"


def test_cli_config_check_refuses_unknown_amp():
    import click

    from fedmm.cli.preflight import check_config

    cfg = load_config(None, ["train.amp=fp16", "device=cpu"])
    with pytest.raises(click.UsageError, match="train.amp"):
        check_config(cfg)


@on_gpu
@pytest.mark.gpu
def test_gpu_bf16_autocast_reaches_the_model_and_keeps_float32_state():
    seen = []
    model = _model().cuda()
    model.head.classifier.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    tcfg = replace(TrainConfig(), local_epochs=1, batch_size=8)
    for amp, dtype in (("bf16", torch.bfloat16), ("none", torch.float32)):
        seen.clear()
        res = train_local(model, _split(), replace(tcfg, amp=amp), generator=torch.Generator().manual_seed(0),
                          device="cuda")
        assert seen and set(seen) == {dtype}, (amp, seen)
        assert np.isfinite(res.loss)
        assert all(p.dtype == torch.float32 for p in model.parameters())


@on_gpu
@pytest.mark.gpu
def test_gpu_device_resident_batches_match_host_batches(monkeypatch):
    """On CUDA train_local gathers batches on the device: the same rows, in the same order, as on the CPU."""
    def batches(device):
        seen, model = [], _model().to(device)
        real = model.forward
        monkeypatch.setattr(model, "forward", lambda batch, *a: seen.append(
            {k: v.cpu() for k, v in batch.items()}) or real(batch, *a))
        train_local(model, _split(), replace(TrainConfig(), local_epochs=2, batch_size=8),
                    generator=torch.Generator().manual_seed(0), device=device)
        return seen

    gpu, cpu = batches("cuda"), batches("cpu")
    assert len(gpu) == len(cpu) == 6
    assert all(torch.equal(a[k], b[k]) for a, b in zip(gpu, cpu) for k in a)
