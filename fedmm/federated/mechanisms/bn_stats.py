"""BatchNorm statistics that fit the global weights (``fed.bn = recompute``).

Averaging clients' running statistics gives the mean of statistics of *their* local
weights, not statistics of the averaged weights, and the eval-mode global image
encoder is then miscalibrated. After the last round the round loop runs one
statistics pass (a broadcast with ``meta["task"] = "bn_stats"``, over every transport):

Client half: load the global model, run the image encoder over the client's own
training images in train mode with cumulative averaging (no gradient, no weight
change) and upload each BatchNorm layer's batch-free mean and variance with the
number of images they came from.

Server half: pool the clients' moments exactly (law of total variance,
``var = sum n_k (var_k + mean_k^2) / N - mean^2``) and publish them as the global
model's running statistics.
"""
from __future__ import annotations

import numpy as np
import torch

from fedmm.federated.params import federated_name

TASK = "bn_stats"


# ---- client half ---------------------------------------------------------------------------------

def client_statistics(model, images: torch.Tensor, device, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{"shared/<bn>.running_mean" / ".running_var": float32 [C]}: the population statistics of
    every BatchNorm layer of the image encoder over ``images`` [N, 1, S, S] (uint8), computed
    with ``torch.optim.swa_utils.update_bn`` (reset, cumulative average in train mode, no
    gradient); the model's running statistics are left as they were."""
    enc = model.image_encoder
    bns = {name: m for name, m in enc.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    if not bns or len(images) == 0:
        return {}
    saved = {k: v.clone() for k, v in enc.state_dict().items()}
    batches = [images[s:s + batch_size].to(device) for s in range(0, len(images), batch_size)]
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, enc)
    out = {}
    for name, m in bns.items():
        prefix = "shared/" + federated_name(f"image_encoder.{name}")
        out[f"{prefix}.running_mean"] = m.running_mean.detach().float().cpu().numpy().copy()
        out[f"{prefix}.running_var"] = m.running_var.detach().float().cpu().numpy().copy()
    enc.load_state_dict(saved)
    return out


# ---- server half ---------------------------------------------------------------------------------

def pooled_statistics(uploads: list) -> dict[str, np.ndarray]:
    """Federated name -> pooled running_mean / running_var over the uploads (weighted by ``n_train``)."""
    means = sorted({k for u in uploads for k in u.arrays if k.endswith(".running_mean")})
    out = {}
    for key in means:
        var_key = key[: -len("running_mean")] + "running_var"
        have = [u for u in uploads if key in u.arrays and var_key in u.arrays]
        if not have:
            continue
        n = np.array([float(u.meta["n_train"]) for u in have])[:, None]                  # [K, 1]
        m = np.stack([u.arrays[key] for u in have]).astype(np.float64)                    # [K, C]
        v = np.stack([u.arrays[var_key] for u in have]).astype(np.float64)                # [K, C]
        mean = (n * m).sum(0) / n.sum()
        var = np.maximum((n * (v + m * m)).sum(0) / n.sum() - mean * mean, 0.0)
        out[key[len("shared/"):]] = mean.astype(np.float32)
        out[var_key[len("shared/"):]] = var.astype(np.float32)
    return out
