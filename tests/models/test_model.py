import numpy as np
import pytest
import torch
import torchvision
from transformers import BertConfig, BertModel

from fedmm.config import load_config
from fedmm.federated.client import build_model
from fedmm.models.encoders import ImageEncoder, TextEncoder
from fedmm.federated.params import param_group
from fedmm.models.model import FedMMModel, ModelConfig
from fedmm.models.surrogate import GlobalVectors, surrogate_tokens

D, C, V, L = 32, 5, 300, 12


def _batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (B, 1, 32, 32), dtype=torch.uint8, generator=g),
            "input_ids": torch.randint(5, V, (B, L), generator=g),
            "attention_mask": torch.arange(L)[None].expand(B, L) < torch.randint(3, L, (B, 1), generator=g),
            "has_image": torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)[:B],
            "has_text": torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)[:B],
            "labels": torch.randint(0, C, (B,), generator=g)}


def _model(**kw):
    """The fusion path alone unless a test asks for uni-modal heads (the default "auto" adds an image head)."""
    kw.setdefault("unimodal_heads", "none")
    torch.manual_seed(0)
    return FedMMModel(ModelConfig(d=D, heads=4, **kw), vocab_size=V, n_classes=C, max_len=L)


def _gv(rng, k=6):
    ci = rng.standard_normal((k, D)).astype(np.float32)
    ct = rng.standard_normal((k, D)).astype(np.float32)
    return GlobalVectors(ci, ct, np.arange(k), rng.permutation(k), np.ones((k, C), np.float32),
                         np.ones((k, C), np.float32), np.zeros((k, 2 * D), np.float32))


def test_surrogate_tokens_pick_most_similar_centers_partners():
    src = torch.eye(4, 8)  # centers along axes 0..3
    dst = torch.arange(4 * 8, dtype=torch.float32).view(4, 8)
    pooled = torch.tensor([[0.0, 0.0, 5.0, 0.1, 0, 0, 0, 0]])  # closest to center 2, then 3
    tok = surrogate_tokens(pooled, src, dst, m=2, temperature=0.1)  # [1, 2, 8]
    sims = torch.nn.functional.normalize(pooled, dim=-1) @ src.T
    w = torch.softmax(torch.tensor([sims[0, 2], sims[0, 3]]) / 0.1, 0) * 2
    torch.testing.assert_close(tok[0, 0], dst[2] * w[0])
    torch.testing.assert_close(tok[0, 1], dst[3] * w[1])


def test_forward_handles_every_missing_pattern_with_and_without_global_vectors():
    model = _model()
    batch = _batch()
    for gv in (None, _gv(np.random.default_rng(0))):
        out = model(batch, gv)
        assert out.logits.shape == (6, C) and torch.isfinite(out.logits).all()
        # pooled vectors are zero exactly where the modality is absent
        assert torch.all(out.pooled_image[~batch["has_image"]] == 0)
        assert torch.all(out.pooled_text[~batch["has_text"]] == 0)
        assert torch.all(out.pooled_image[batch["has_image"]].abs().sum(1) > 0)


def test_missing_modality_uses_surrogates_not_encoder():
    model = _model(surrogate_fill="both").eval()  # no dropout / batch-norm updates: pure function of inputs
    batch = _batch()
    batch["has_text"][:] = False  # image-only batch
    gv = _gv(np.random.default_rng(1))
    a = model(batch, gv).logits
    batch["input_ids"] = torch.randint(5, V, batch["input_ids"].shape)  # text content must not matter
    b = model(batch, gv).logits
    torch.testing.assert_close(a, b)
    c = model(batch, None).logits  # missing token instead of surrogates changes the prediction
    assert not torch.allclose(a, c)
    c.sum().backward()
    assert model.head.missing_text.grad is not None and model.head.missing_text.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())



@pytest.mark.parametrize("fill", ["both", "image", "text", "none"])
def test_surrogate_fill_chooses_which_missing_modality_gets_surrogates(fill):
    model = _model(surrogate_fill=fill).eval()
    batch = _batch()
    gv_a, gv_b = _gv(np.random.default_rng(2)), _gv(np.random.default_rng(3))
    a, b = model(batch, gv_a).logits, model(batch, gv_b).logits  # [B, C]
    no_gv = model(batch, None).logits  # learned missing tokens everywhere
    img_missing = batch["has_text"] & ~batch["has_image"]
    txt_missing = batch["has_image"] & ~batch["has_text"]
    both = batch["has_image"] & batch["has_text"]
    torch.testing.assert_close(a[both], no_gv[both])  # complete rows never use the global vectors
    for rows, filled in ((img_missing, fill in ("both", "image")), (txt_missing, fill in ("both", "text"))):
        if filled:  # surrogates: the prediction follows the global vectors
            assert not torch.allclose(a[rows], b[rows])
        else:       # the learned missing token: global vectors do not matter
            torch.testing.assert_close(a[rows], no_gv[rows])
            torch.testing.assert_close(b[rows], no_gv[rows])


def test_surrogate_fill_rejects_unknown_values():
    with pytest.raises(ValueError, match="surrogate_fill"):
        _model(surrogate_fill="images")

def test_modality_dropout_only_drops_from_complete_samples_and_never_both():
    model = _model(modality_dropout=0.9)
    batch = _batch()
    out = model(batch, None, modality_dropout=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.all(out.has_image | out.has_text)
    assert torch.all(out.has_image <= batch["has_image"]) and torch.all(out.has_text <= batch["has_text"])
    assert (out.has_image != batch["has_image"]).any() or (out.has_text != batch["has_text"]).any()


def test_concat_fusion_and_parameter_groups():
    model = _model(fusion="concat")
    assert model(_batch(), None).logits.shape == (6, C)
    groups = {param_group(k) for k in model.head.state_dict()}
    assert groups == {"image_adapter", "text_adapter", "missing_image", "missing_text", "fusion", "classifier", "align"}
    assert param_group("image_encoder.features.0.0.weight") == "image_encoder"
    with pytest.raises(KeyError):
        param_group("features.0.0.weight")


def test_image_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    net = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(net.state_dict(), tmp_path / "mnv3.pth")
    enc = ImageEncoder("small", tmp_path / "mnv3.pth")
    for k, v in net.features.state_dict().items():
        torch.testing.assert_close(enc.features.state_dict()[k], v)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision mobilenet_v3_small"):
        ImageEncoder("small", tmp_path / "bad.pth")


def test_text_model_loads_from_a_local_folder(tmp_path):
    torch.manual_seed(4)
    bert = BertModel(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "bert")
    enc = TextEncoder(V, model_dir=tmp_path / "bert")
    assert enc.out_dim == 32
    ids, mask = torch.randint(0, V, (2, 7)), torch.ones(2, 7, dtype=torch.bool)
    bert.eval(), enc.eval()
    torch.testing.assert_close(enc(ids, mask), bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state)


def test_image_encoder_batchnorm_statistics_settle_within_a_client_sized_budget():
    """A client takes ~10 steps per epoch: after 40 train-mode steps every BatchNorm's
    running mean must sit at its input's batch mean (torchvision's momentum 0.01 leaves
    ~67% of the initial error there, and the eval-mode model then predicts one class)."""
    torch.manual_seed(3)
    enc = ImageEncoder("small").train()
    images = torch.randint(0, 256, (16, 1, 64, 64), dtype=torch.uint8)
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = {}
    hooks = [bn.register_forward_hook(lambda m, inp, out: seen.__setitem__(m, inp[0].detach())) for bn in bns]
    with torch.no_grad():
        for _ in range(40):
            enc(images)
    for h in hooks:
        h.remove()
    worst = 0.0
    for bn in bns:
        x = seen[bn].double()  # [B, C, h, w], identical every step (fixed input)
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
        worst = max(worst, float(((bn.running_mean.double() - mean).abs() / (mean.abs() + std + 1e-6)).max()))
    assert worst < 0.05, worst  # 0.9**40 = 1.5% of the initial gap remains


@pytest.mark.parametrize("heads", ["image", "text", "both", "late"])
def test_unimodal_heads_classify_rows_holding_only_their_modality(heads):
    model = _model(unimodal_heads=heads).eval()
    plain = _model().eval()   # same seed: identical encoders, adapters and fusion
    batch = _batch()
    out, ref = model(batch, None), plain(batch, None)
    img_only = batch["has_image"] & ~batch["has_text"]
    txt_only = batch["has_text"] & ~batch["has_image"]
    both = batch["has_image"] & batch["has_text"]
    uni = model.head.unimodal
    with torch.no_grad():
        for mod, rows, pooled in (("image", img_only, out.pooled_image), ("text", txt_only, out.pooled_text)):
            if mod in uni:
                torch.testing.assert_close(out.logits[rows], uni[mod](pooled[rows]))
            else:
                torch.testing.assert_close(out.logits[rows], ref.logits[rows])
        if heads == "late":   # paired rows: fused logits + both uni-modal heads' logits
            late = ref.logits[both] + uni["image"](out.pooled_image[both]) + uni["text"](out.pooled_text[both])
            torch.testing.assert_close(out.logits[both], late)
        else:
            torch.testing.assert_close(out.logits[both], ref.logits[both])
    assert {param_group(k) for k in model.head.state_dict()} >= {"unimodal"}


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_unimodal_fusion_loss_adds_the_fusion_paths_loss_on_rows_a_unimodal_head_classified(weight):
    from fedmm.federated.train import batch_loss

    batch = _batch()
    model = _model(unimodal_heads="image", unimodal_fusion_loss=weight).eval()   # eval: no dropout noise
    loss = batch_loss(model, batch, None, 0.0, torch.Generator().manual_seed(0))
    out = model(batch, None)
    img_only = batch["has_image"] & ~batch["has_text"]   # rows 1 and 5 of 6
    labels = batch["labels"]
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(out.logits, labels)
        expected += weight * torch.nn.functional.cross_entropy(out.fused[img_only], labels[img_only]) * 2 / 6
        torch.testing.assert_close(loss, expected)
    model.zero_grad()
    loss.backward()
    classifier_grad = sum(float(p.grad.abs().sum()) for p in model.head.classifier.parameters())
    # the image-only rows reach the fusion classifier only through this loss; the others do anyway
    only_img = {k: v[img_only] for k, v in batch.items()}
    model.zero_grad()
    batch_loss(model, only_img, None, 0.0, torch.Generator().manual_seed(0)).backward()
    grads = [p.grad for p in model.head.classifier.parameters()]
    assert classifier_grad > 0
    assert (all(g is not None and bool(g.any()) for g in grads) if weight
            else all(g is None or not bool(g.any()) for g in grads))


@pytest.mark.parametrize("strategy, heads, expected", [
    ("fedmm", "auto", ("image",)), ("fedavg", "auto", ()), ("local", "auto", ()), ("centralized", "auto", ()),
    ("fedavg", "image", ("image",)), ("fedmm", "none", ())])
def test_auto_unimodal_heads_give_fedmm_an_image_head_and_the_baselines_one_fusion_path(strategy, heads, expected):
    cfg = load_config(overrides=[f"fed.strategy={strategy}", f"model.unimodal_heads={heads}", f"model.d={D}"])
    model = build_model(cfg, vocab_size=V, n_classes=C, seed=0)
    assert tuple(model.head.unimodal) == expected
    assert model.cfg.unimodal_heads == (expected[0] if expected else "none")


def test_unimodal_heads_reject_unknown_values():
    with pytest.raises(ValueError, match="unimodal_heads"):
        _model(unimodal_heads="images")


def test_trim_masked_drops_only_positions_no_row_uses():
    from fedmm.models.model import trim_masked
    tokens = torch.randn(3, 6, 4)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, :2] = True
    mask[2, 3] = True
    t, m = trim_masked(tokens, mask)
    assert t.shape == (3, 4, 4) and torch.equal(m, mask[:, :4]) and torch.equal(t, tokens[:, :4])
    t, m = trim_masked(tokens, torch.zeros(3, 6, dtype=torch.bool))
    assert t.shape == (3, 1, 4) and not m.any()
    full = torch.ones(3, 6, dtype=torch.bool)
    assert trim_masked(tokens, full)[0] is tokens


@pytest.mark.parametrize("hide", ["text", "image", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_classify_with_trimmed_sequences_equals_untrimmed(hide, dtype, monkeypatch):
    """Trimming unused positions before the fusion changes nothing the head computes: float64
    with the learned missing tokens, float32 with surrogates from global vectors."""
    import fedmm.models.model as model_module

    model = _model(unimodal_heads="image").to(dtype).eval()
    batch = _batch(seed=4)
    has_img, has_txt = batch["has_image"].clone(), batch["has_text"].clone()
    if hide == "text":
        has_txt[:] = False
    elif hide == "image":
        has_img[:] = False
    gv = _gv(np.random.default_rng(2)) if dtype == torch.float32 else None
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    with torch.no_grad():
        enc = model.encode(batch, batch["has_image"], batch["has_text"])
        trimmed = model.classify(enc, has_img, has_txt, gv).logits
        monkeypatch.setattr(model_module, "trim_masked", lambda t, m: (t, m))
        untrimmed = model.classify(enc, has_img, has_txt, gv).logits
    torch.testing.assert_close(trimmed, untrimmed, rtol=tol, atol=tol)
