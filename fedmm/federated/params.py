"""What a model shares with the federation: named tensors grouped into parameter groups.

The federated namespace is the model's state dict with the head's ``head.`` prefix
dropped: head tensors keep their names (``fusion.i2t.wq``), encoder tensors carry
their module (``image_encoder.features.0.0.weight``, ``text_encoder.bert...``).
A parameter group (first name component) is the unit of federation: a client
uploads only the groups it trained and the server combines each group over the
clients that trained it.

Which tensors are federated is a :class:`ShareSpec`:

- ``encoders = "shared"``: the image encoder is a group, the text encoder another;
  ``"local"``: encoders never leave the site (the brief's strict mode);
- ``bn = "shared"``: BatchNorm affine weights and running statistics are averaged
  with the rest; ``"local"``: they stay at each client (FedBN); ``"recompute"``: shared,
  and after the last round the statistics are recomputed for the global weights by a
  federated statistics pass (:mod:`fedmm.federated.mechanisms.bn_stats`).

Integer buffers (BatchNorm's ``num_batches_tracked``, BERT's position ids) are
never federated: they are bookkeeping, not learned state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmm.models.head import GROUPS as HEAD_GROUPS

ENCODER_GROUPS = ("image_encoder", "text_encoder")
GROUPS = HEAD_GROUPS + ENCODER_GROUPS
ENCODER_MODES = ("shared", "local")
BN_MODES = ("shared", "local", "recompute")


@dataclass(frozen=True)
class ShareSpec:
    """Which of a model's tensors the federation shares."""

    head: bool = True
    encoders: str = "shared"           # shared | local
    bn: str = "shared"                 # shared | local (FedBN) | recompute (shared + a final statistics pass)

    def __post_init__(self) -> None:
        if self.encoders not in ENCODER_MODES:
            raise ValueError(f"fed.encoders must be one of {ENCODER_MODES}, got {self.encoders!r}")
        if self.bn not in BN_MODES:
            raise ValueError(f"fed.bn must be one of {BN_MODES}, got {self.bn!r}")


def federated_name(state_key: str) -> str:
    """Model state-dict key -> federated name (``head.fusion.i2t.wq`` -> ``fusion.i2t.wq``)."""
    return state_key[len("head."):] if state_key.startswith("head.") else state_key


def model_key(name: str) -> str:
    """Federated name -> model state-dict key (inverse of :func:`federated_name`)."""
    return name if name.split(".", 1)[0] in ENCODER_GROUPS else f"head.{name}"


def param_group(name: str) -> str:
    """Federation group of a federated name ('fusion.i2t.wq' -> 'fusion', 'image_encoder.x' -> 'image_encoder')."""
    group = name.split(".", 1)[0]
    if group not in GROUPS:
        raise KeyError(f"parameter {name!r} belongs to no federation group")
    return group


def _batchnorm_keys(model: torch.nn.Module) -> set[str]:
    keys = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            keys.update(f"{mod_name}.{k}" for k in mod.state_dict())
    return keys


def shared_keys(model: torch.nn.Module, spec: ShareSpec) -> list[str]:
    """Model state-dict keys that ``spec`` federates, in state-dict order."""
    bn = _batchnorm_keys(model) if spec.bn == "local" else set()
    out = []
    for key, value in model.state_dict().items():
        group = key.split(".", 1)[0]
        if not value.is_floating_point() or key in bn:
            continue
        if (group == "head" and spec.head) or (group in ENCODER_GROUPS and spec.encoders == "shared"):
            out.append(key)
    return out


def shared_state(model: torch.nn.Module, spec: ShareSpec, groups=GROUPS) -> dict[str, np.ndarray]:
    """float32 numpy copies of the federated tensors in ``groups``, by federated name."""
    state = model.state_dict()
    out = {}
    for key in shared_keys(model, spec):
        name = federated_name(key)
        if param_group(name) in groups:
            out[name] = state[key].detach().float().cpu().numpy().copy()
    return out


def shared_shapes(model: torch.nn.Module, spec: ShareSpec) -> dict[str, tuple]:
    """Federated name -> shape: every tensor a client may upload or the server broadcast."""
    state = model.state_dict()
    return {federated_name(k): tuple(state[k].shape) for k in shared_keys(model, spec)}


def load_shared(model: torch.nn.Module, arrays: dict[str, np.ndarray], prefix: str = "shared/") -> int:
    """Copy every ``prefix<name>`` array into the model (others untouched); returns how many were loaded."""
    state = model.state_dict()
    loaded = 0
    with torch.no_grad():
        for name, value in arrays.items():
            if not name.startswith(prefix):
                continue
            key = model_key(name[len(prefix):])
            if key not in state:
                raise ValueError(f"state mismatch: {name!r} is no tensor of this model")
            if tuple(state[key].shape) != tuple(value.shape):
                raise ValueError(f"state mismatch: {name!r} is {list(value.shape)}, model has {list(state[key].shape)}")
            state[key].copy_(torch.from_numpy(np.asarray(value)))
            loaded += 1
    return loaded


def trainable_groups(model: torch.nn.Module, spec: ShareSpec) -> dict[str, str]:
    """Parameter name (model.named_parameters) -> its group, for the parameters ``spec`` federates."""
    keys = set(shared_keys(model, spec))
    return {k: param_group(federated_name(k)) for k, _ in model.named_parameters() if k in keys}
