"""One image-encoder call over several batches equals separate calls (fedmm/models/segmented_bn.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fedmm.models.encoders import ImageEncoder
from fedmm.models.model import FedMMModel, ModelConfig
from fedmm.models.segmented_bn import SegmentedBatchNorm2d, batch_segments, use_segmented_bn


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _twins(seed: int = 0) -> tuple[ImageEncoder, ImageEncoder]:
    torch.manual_seed(seed)
    a = ImageEncoder().double().train()
    b = ImageEncoder().double().train()
    b.load_state_dict(a.state_dict())
    return a, b


def test_every_batchnorm_of_the_encoder_is_segmented_with_its_settings():
    enc = ImageEncoder()
    bns = [m for m in enc.features.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is SegmentedBatchNorm2d for m in bns)
    assert all(m.momentum == 0.1 for m in bns)


def test_segmented_layer_equals_the_layer_on_each_segment_in_turn():
    torch.manual_seed(1)
    ref = nn.BatchNorm2d(6, momentum=0.3).double()
    ref.weight.data.uniform_(0.5, 1.5)
    ref.bias.data.normal_()
    holder = nn.Sequential(nn.BatchNorm2d(6, momentum=0.3).double())
    holder[0].load_state_dict(ref.state_dict())
    use_segmented_bn(holder)
    seg = holder[0]
    assert type(seg) is SegmentedBatchNorm2d
    x = torch.randn(7, 6, 3, 3, dtype=torch.float64) * 3 + 1
    want = torch.cat([ref(x[:4]), ref(x[4:])])
    with batch_segments(holder, (4, 3)):
        got = seg(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(seg, name), getattr(ref, name), rtol=1e-12, atol=1e-12)
    assert seg.segments is None                          # reset on leaving the block
    joint = seg(x)                                       # outside it: one batch, as nn.BatchNorm2d
    torch.testing.assert_close(joint, nn.functional.batch_norm(x, None, None, seg.weight, seg.bias, True), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("sizes", [(16, 8), (5, 3), (0, 4)])
def test_joint_encoder_call_equals_separate_calls_forward_backward_and_statistics(sizes):
    n, e = sizes
    joint_enc, apart_enc = _twins()
    x, extra = _images(n, 2), _images(e, 3)
    joint = joint_enc(torch.cat([x, extra]), segments=(n, e))               # [n + e, h*w, C]
    apart = [apart_enc(t) for t in (x, extra) if len(t)]
    torch.testing.assert_close(joint, torch.cat(apart), rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(joint)
    (joint * weights).sum().backward()
    (torch.cat(apart) * weights).sum().backward()
    for (name, p), q in zip(joint_enc.named_parameters(), apart_enc.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=name)
    for (name, b), c in zip(joint_enc.named_buffers(), apart_enc.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-12, atol=1e-12, msg=name)


def test_model_encode_with_extra_images_equals_its_own_encoding():
    """FedMMModel.encode(batch, extra_images=...) in training mode: the batch's tokens and the
    extra images' tokens are those of separate passes (float64)."""
    torch.manual_seed(0)
    model = FedMMModel(ModelConfig(d=16, heads=2), vocab_size=50, n_classes=3, max_len=8).double().train()
    twin = FedMMModel(ModelConfig(d=16, heads=2), vocab_size=50, n_classes=3, max_len=8).double().train()
    twin.load_state_dict(model.state_dict())
    for m in (model, twin):   # no dropout: the text encoder's draws are not what is compared
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
    g = torch.Generator().manual_seed(4)
    batch = {"images": _images(6, 5), "input_ids": torch.randint(1, 50, (6, 8), generator=g),
             "attention_mask": torch.ones(6, 8, dtype=torch.bool)}
    has_img = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    has_txt = torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)
    extra = _images(4, 6)
    got = model.encode(batch, has_img, has_txt, extra_images=extra)
    want = twin.encode(batch, has_img, has_txt)
    want_extra = twin.head.image_adapter(twin.image_encoder(extra))
    for a, b in ((got.image, want.image), (got.text, want.text), (got.extra_image, want_extra)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert got.extra_image.shape[0] == 4 and want.extra_image is None
