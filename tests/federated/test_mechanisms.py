"""Mechanisms' client and server halves on small hand-made inputs."""
import numpy as np
import pytest
import torch

from fedmm.federated.mechanisms.alignment import info_nce
from fedmm.federated.mechanisms.balance import adjusted_logits, log_prior, logit_adjustment, paired_adjustment
from fedmm.federated.mechanisms.contribution import cap_weights, client_weights, effective_clients
from fedmm.federated.mechanisms import server_lr
from fedmm.federated.mechanisms.rep_kd import global_representations
from fedmm.federated.messages import Message


def _up(name, n, s, **meta):
    return Message("upload", {}, {"client": name, "n_train": n, "val_score": s, **meta})


def test_single_class_or_tiny_validation_buys_no_weight():
    # d claims a perfect score on a one-class split; e a perfect score on 2 validation rows
    ups = [_up("a", 100, 0.40, n_val=20, val_classes=6), _up("b", 100, 0.45, n_val=20, val_classes=6),
           _up("c", 100, 0.50, n_val=20, val_classes=6), _up("d", 100, 1.00, n_val=20, val_classes=1),
           _up("e", 100, 1.00, n_val=2, val_classes=2)]
    w = client_weights(ups, "performance", tau=0.1, n_classes=7)
    assert w.sum() == pytest.approx(1.0)
    assert w[3] == pytest.approx(w[2], rel=1e-9)          # single class: exactly the median client's (c's) weight
    assert w[2] < w[4] < 1.1 * w[2]                        # two rows: barely above the median
    assert w[2] > w[1] > w[0]                              # real, confident differences still count


def test_claims_are_bounded_and_weights_capped():
    ups = [_up(str(i), 100, 0.5, n_val=20, val_classes=5) for i in range(9)] + [_up("liar", 10**6, 0.5)]
    for weighting in ("performance", "samples"):
        w = client_weights(ups, weighting, tau=0.1, n_classes=7)
        assert w[-1] <= 3.0 / len(ups) + 1e-12 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(client_weights(ups, "uniform", 0.1), np.full(10, 0.1))


def test_cap_weights_redistributes_and_effective_clients():
    w = cap_weights(np.array([100.0, 1, 1, 1, 1]), cap=2.0)
    assert w.max() == pytest.approx(0.4) and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w[1:], 0.15)
    assert effective_clients(np.ones(4)) == pytest.approx(4.0)
    assert effective_clients(np.array([1.0, 0, 0])) == pytest.approx(1.0)


def test_logit_adjustment_is_tau_log_prior():
    labels = torch.tensor([0, 0, 0, 1])
    lp = log_prior(labels, 3)
    np.testing.assert_allclose(lp.exp().numpy(), [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)
    np.testing.assert_allclose(logit_adjustment(labels, 3, 0.5).numpy(), 0.5 * lp.numpy())
    assert logit_adjustment(labels, 3, 0.0) is None
    assert logit_adjustment(torch.zeros(4, 3), 3, 1.0, multilabel=True) is None


def test_info_nce_prefers_matching_pairs():
    torch.manual_seed(0)
    a = torch.randn(8, 16, dtype=torch.float64)
    matched = info_nce(a, a + 0.01 * torch.randn_like(a), 0.1)
    shuffled = info_nce(a, a[torch.randperm(8)], 0.1)
    assert matched < 0.05 < shuffled
    # by hand for 2 rows: logits = cos / T
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    expect = -torch.log_softmax(torch.eye(2, dtype=torch.float64) / 0.5, -1).diag().mean()
    assert info_nce(x, x, 0.5).item() == pytest.approx(expect.item())


def test_global_representations_are_the_median_per_row():
    reps = [np.full((3, 2), v, np.float32) for v in (1.0, 2.0, 100.0)]
    ups = [Message("upload", {"public/image_reps": r}, {}) for r in reps]
    out = global_representations(ups + [Message("upload", {}, {})])
    assert set(out) == {"image"}
    np.testing.assert_array_equal(out["image"], np.full((3, 2), 2.0))


def test_missing_views_term_is_the_cross_entropy_of_both_hidden_views():
    import torch.nn.functional as F

    from fedmm.federated.mechanisms.missing_views import MissingViewsTerm
    from fedmm.models.model import FedMMModel, ModelConfig
    torch.manual_seed(0)
    model = FedMMModel(ModelConfig(d=16, heads=2, unimodal_heads="none"), vocab_size=50, n_classes=3, max_len=8).eval()
    n = 5
    batch = {"images": torch.randint(0, 255, (n, 1, 32, 32), dtype=torch.uint8),
             "input_ids": torch.randint(1, 50, (n, 8)), "attention_mask": torch.ones(n, 8, dtype=torch.bool),
             "has_image": torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool),
             "has_text": torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool), "labels": torch.tensor([0, 1, 2, 0, 1])}
    out = model(batch)
    both = torch.tensor([True, True, False, False, True])
    none = torch.zeros(n, dtype=torch.bool)
    adjust = torch.tensor([0.5, -0.2, 0.1])
    expect = sum(F.cross_entropy(model.classify(out.enc, hi, ht).logits[both] + adjust, batch["labels"][both])
                 for hi, ht in ((both, none), (none, both)))
    got = MissingViewsTerm(0.5, adjust)(model, batch, out, None, None)
    assert got.item() == pytest.approx(0.5 * expect.item(), rel=1e-6)
    unpaired = {**batch, "has_text": torch.zeros(n, dtype=torch.bool)}
    assert MissingViewsTerm(0.5)(model, unpaired, model(unpaired), None, None) is None


def test_server_lr_extrapolates_weights_and_averages_statistics():
    rng = np.random.default_rng(7)
    old = {"w": rng.standard_normal((3, 4)).astype(np.float32), "bn.running_var": np.ones(4, np.float32),
           "bn.num_batches_tracked": np.array(5, np.int64)}
    new = {"w": rng.standard_normal((3, 4)).astype(np.float32), "bn.running_var": np.full(4, 0.5, np.float32),
           "bn.num_batches_tracked": np.array(9, np.int64)}
    got = server_lr.server_step(old, new, 2.5)
    want = old["w"].astype(np.float64) + 2.5 * (new["w"].astype(np.float64) - old["w"])
    np.testing.assert_allclose(got["w"], want, rtol=1e-6)
    assert got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["bn.running_var"], new["bn.running_var"])   # statistics: averaged only
    assert got["bn.num_batches_tracked"] == 9
    same = server_lr.server_step(old, new, 1.0)
    np.testing.assert_allclose(same["w"], new["w"], rtol=1e-6)
    assert not server_lr.enabled(1.0) and server_lr.enabled(2.0)


def test_logit_adjustment_on_single_and_paired_rows():
    g = torch.Generator().manual_seed(3)
    logits, adjust, paired = torch.randn(4, 3, generator=g), torch.randn(3, generator=g), torch.randn(3, generator=g)
    has_img, has_txt = torch.tensor([1, 1, 0, 1]), torch.tensor([1, 0, 1, 1])
    everywhere = adjusted_logits(logits, adjust, has_img, has_txt, adjust)
    torch.testing.assert_close(everywhere, logits + adjust)
    single = adjusted_logits(logits, adjust, has_img, has_txt)
    torch.testing.assert_close(single[[0, 3]], logits[[0, 3]])          # image + report: raw
    torch.testing.assert_close(single[[1, 2]], logits[[1, 2]] + adjust)  # one modality: adjusted
    both = adjusted_logits(logits, adjust, has_img, has_txt, paired)
    torch.testing.assert_close(both[[0, 3]], logits[[0, 3]] + paired)
    torch.testing.assert_close(both[[1, 2]], logits[[1, 2]] + adjust)
    assert adjusted_logits(logits, None, has_img, has_txt) is logits


def test_paired_adjustment_modes():
    from types import SimpleNamespace
    from fedmm.models.surrogate import GlobalVectors
    adjust = torch.tensor([0.5, -0.2, 0.1])
    cfg = lambda **kw: SimpleNamespace(**{"balance_paired": False, "paired_federation_prior": False,  # noqa: E731
                                          "logit_adjust_tau": 2.0, **kw})
    hist_img, hist_txt = np.array([[3.0, 1, 0], [1, 1, 4]]), np.array([[2.0, 0, 0]])
    gv = GlobalVectors(np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32), np.arange(1), np.arange(1),
                       hist_img, hist_txt, np.zeros((1, 8), np.float32))
    assert paired_adjustment(None, cfg(balance_paired=True)) is None
    assert paired_adjustment(adjust, cfg(balance_paired=True)) is adjust
    assert paired_adjustment(adjust, cfg(), gv) is None
    assert paired_adjustment(adjust, cfg(paired_federation_prior=True), None) is None   # no centers yet
    totals = np.array([6.0, 2.0, 4.0])
    want = adjust.double() - 2.0 * torch.log(torch.tensor((totals + 1) / (totals.sum() + 3)))
    torch.testing.assert_close(paired_adjustment(adjust, cfg(paired_federation_prior=True), gv), want.float())
