"""The BatchNorm statistics pass: client statistics and their exact pooling at the server."""
import numpy as np
import torch

from fedmm.federated.mechanisms.bn_stats import client_statistics, pooled_statistics
from fedmm.federated.messages import Message
from fedmm.models.model import FedMMModel, ModelConfig


def test_pooled_statistics_equal_those_of_the_union():
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, 2.0, size=(n, 3)) for loc, n in ((0.0, 50), (3.0, 150), (-1.0, 20))]
    ups = [Message("upload", {"shared/image_encoder.f.1.running_mean": p.mean(0).astype(np.float32),
                              "shared/image_encoder.f.1.running_var": p.var(0).astype(np.float32)},
                   {"n_train": len(p)}) for p in parts]
    out = pooled_statistics(ups)
    union = np.concatenate(parts)
    np.testing.assert_allclose(out["image_encoder.f.1.running_mean"], union.mean(0), rtol=1e-5)
    np.testing.assert_allclose(out["image_encoder.f.1.running_var"], union.var(0), rtol=1e-5)


def test_client_statistics_match_the_first_layer_and_leave_the_model_unchanged():
    torch.manual_seed(0)
    model = FedMMModel(ModelConfig(d=16, heads=2), vocab_size=50, n_classes=3, max_len=8)
    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = client_statistics(model, images, "cpu", batch_size=64)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    enc = model.image_encoder
    x = images.float().div(255.0).expand(-1, 3, -1, -1)
    with torch.no_grad():
        conv = enc.features[0][0](((x - enc.mean) / enc.std))  # input of the first BatchNorm
    np.testing.assert_allclose(stats["shared/image_encoder.features.0.1.running_mean"],
                               conv.mean((0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["shared/image_encoder.features.0.1.running_var"],
                               conv.var((0, 2, 3)).numpy(), rtol=1e-3, atol=1e-5)
    assert len(stats) == 2 * sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())
