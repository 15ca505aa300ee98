"""train.rep_kd_every: the representation-KD term on every k-th step, weighted k times."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmm.data.encode import EncodedSplit
from fedmm.federated.mechanisms.rep_kd import RepKD
from fedmm.models.model import FedMMModel, ModelConfig


def _public(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return EncodedSplit(images=torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
                        input_ids=torch.randint(1, 50, (n, 8), generator=g),
                        attention_mask=torch.ones(n, 8, dtype=torch.bool),
                        has_image=torch.ones(n, dtype=torch.bool), has_text=torch.ones(n, dtype=torch.bool),
                        labels=torch.randint(0, 3, (n,), generator=g), ids=[str(i) for i in range(n)])


class _Out:
    logits = torch.zeros(1, 3)
    extra_image = None


def _step(model, term, generator):
    """One training step's use of the term: its images drawn and encoded, then the term."""
    out = _Out()
    images = term.extra_images(generator, "cpu")
    if images is not None:
        out.extra_image = model.head.image_adapter(model.image_encoder(images))
    return term(model, {}, out, None, generator)


def _terms(every: int):
    torch.manual_seed(0)
    model = FedMMModel(ModelConfig(d=16, heads=2), vocab_size=50, n_classes=3, max_len=8).eval()
    rng = np.random.default_rng(1)
    reps = {m: rng.standard_normal((10, 16)).astype(np.float32) for m in ("image", "text")}
    return model, RepKD(_public(), np.arange(10), reps, 0.1, 0.1, batch_size=4, every=every)


def test_every_second_step_doubles_the_weight_and_skips_the_others():
    model, dense = _terms(1)
    _, sparse = _terms(2)
    g_dense, g_sparse = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        for step in range(4):
            got = _step(model, sparse, g_sparse)
            if step % 2:
                assert got is None
                continue
            want = _step(model, dense, g_dense)   # the same public rows: the same draws
            assert got is not None and want is not None and float(want) > 0
            torch.testing.assert_close(got, 2 * want, rtol=1e-6, atol=0)


def test_every_below_one_is_refused():
    with pytest.raises(ValueError, match="rep_kd_every"):
        _terms(0)


def test_cli_config_check_refuses_rep_kd_every_zero():
    import click

    from fedmm.cli.preflight import check_config
    from fedmm.config import load_config

    with pytest.raises(click.UsageError, match="rep_kd_every"):
        check_config(load_config(None, ["train.rep_kd_every=0", "device=cpu"]))
    check_config(load_config(None, ["train.rep_kd_every=2", "device=cpu"]))
