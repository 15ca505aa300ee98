"""FedProx's proximal term (client half only): ``mu / 2 * ||w - w_global||^2`` over the
federated parameters, w_global being the weights the client received this round."""
from __future__ import annotations

import torch


class ProxTerm:
    def __init__(self, model: torch.nn.Module, names: set[str] | dict, mu: float) -> None:
        self.mu = mu
        self.params = {k: p for k, p in model.named_parameters() if k in names}
        self.ref = {k: p.detach().clone() for k, p in self.params.items()}

    def __call__(self, model, batch: dict, out, gv, generator) -> torch.Tensor:
        return self.mu / 2 * sum(((p - self.ref[k]) ** 2).sum() for k, p in self.params.items())
