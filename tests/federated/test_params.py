"""Which tensors a model federates (fed.encoders, fed.bn) and how they round-trip."""
import numpy as np
import pytest
import torch

from fedmm.federated.params import (ShareSpec, load_shared, model_key, param_group, shared_keys, shared_shapes,
                                    shared_state)
from fedmm.federated.train import train_local
from fedmm.models.model import FedMMModel, ModelConfig


def _model(seed=0):
    torch.manual_seed(seed)
    return FedMMModel(ModelConfig(d=16, heads=2), vocab_size=50, n_classes=3, max_len=8)


def test_share_spec_selects_encoders_and_batchnorm():
    model = _model()
    groups = lambda spec: {param_group(n) for n in shared_shapes(model, spec)}  # noqa: E731
    assert groups(ShareSpec()) >= {"image_encoder", "text_encoder", "fusion", "classifier"}
    assert groups(ShareSpec(encoders="local")).isdisjoint({"image_encoder", "text_encoder"})
    shared_bn = [k for k in shared_keys(model, ShareSpec()) if "running_mean" in k]
    assert shared_bn and not [k for k in shared_keys(model, ShareSpec(bn="local")) if "running_mean" in k]
    # BatchNorm affine weights follow the statistics under FedBN; convolutions stay federated
    fedbn = set(shared_keys(model, ShareSpec(bn="local")))
    assert "image_encoder.features.0.0.weight" in fedbn and "image_encoder.features.0.1.weight" not in fedbn
    assert not any("num_batches_tracked" in k or "position_ids" in k for k in shared_keys(model, ShareSpec()))
    with pytest.raises(ValueError, match="fed.encoders"):
        ShareSpec(encoders="sometimes")


def test_shared_state_round_trips_into_another_model():
    a, b = _model(0), _model(1)
    state = shared_state(a, ShareSpec())
    assert all(v.dtype == np.float32 for v in state.values())
    assert load_shared(b, {f"shared/{k}": v for k, v in state.items()}) == len(state)
    sb = b.state_dict()
    for name, v in state.items():
        np.testing.assert_array_equal(sb[model_key(name)].numpy(), v)
    with pytest.raises(ValueError, match="state mismatch"):
        load_shared(b, {"shared/classifier.net.0.bias": np.zeros(2, np.float32)})


def test_a_text_only_client_trains_no_image_encoder():
    from types import SimpleNamespace

    from fedmm.federated.params import trainable_groups
    model = _model()
    n = 8

    class Split(SimpleNamespace):
        def __len__(self):
            return n
    split = Split(images=torch.zeros(n, 1, 32, 32, dtype=torch.uint8),
                  input_ids=torch.randint(1, 50, (n, 8)), attention_mask=torch.ones(n, 8, dtype=torch.bool),
                  has_image=torch.zeros(n, dtype=torch.bool), has_text=torch.ones(n, dtype=torch.bool),
                  labels=torch.randint(0, 3, (n,)))
    tcfg = SimpleNamespace(local_epochs=1, batch_size=4, lr=1e-3, weight_decay=0.0)
    res = train_local(model, split, tcfg, generator=torch.Generator().manual_seed(0), device="cpu",
                      groups=trainable_groups(model, ShareSpec()))
    assert "text_encoder" in res.trained_groups and "text_adapter" in res.trained_groups
    assert "image_encoder" not in res.trained_groups and "image_adapter" not in res.trained_groups
