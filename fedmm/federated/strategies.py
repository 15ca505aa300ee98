"""Strategies are small variations of the one round loop: flags read by the client and server steps."""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("fedmm", "fedavg", "fedprox", "local", "centralized")


@dataclass(frozen=True)
class Strategy:
    name: str
    share: bool            # clients load the global shared weights and the server aggregates them
    kd: bool               # teacher/student knowledge distillation on the public set
    prototypes: bool       # global vectors: surrogate tokens, pairing, server calibration
    modality_dropout: float
    weighting: str         # performance | samples | uniform
    prox_mu: float = 0.0


def strategy_from_config(cfg) -> Strategy:
    """Build the strategy named by ``cfg.fed.strategy`` with the ablation switches applied."""
    f, name = cfg.fed, cfg.fed.strategy
    if name == "fedmm":
        return Strategy(name, True, f.kd, f.prototypes, cfg.model.modality_dropout, f.weighting)
    if name in ("fedavg", "centralized"):
        return Strategy(name, True, False, False, 0.0, "samples")
    if name == "fedprox":
        return Strategy(name, True, False, False, 0.0, "samples", cfg.train.prox_mu)
    if name == "local":
        return Strategy(name, False, False, False, 0.0, "samples")
    raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
