"""Strategies are small variations of the one round loop: flags read by the client and server steps."""
from __future__ import annotations

from dataclasses import dataclass, field

from fedmm.federated.mechanisms import client_dp
from fedmm.federated.params import ShareSpec

STRATEGIES = ("fedmm", "fedavg", "fedprox", "local", "centralized")
POOLED = ("centralized",)   # strategies whose data layout pools every client's data at one site


def pools_data(name: str) -> bool:
    """Whether strategy ``name`` pools every client's data at one site (the centralized baseline):
    one client holding all training and validation rows, whose model is evaluated on every view;
    it has no federation to attack and runs only in one process."""
    return name in POOLED


@dataclass(frozen=True)
class Strategy:
    name: str
    share: bool            # clients load the global shared weights and the server aggregates them
    kd: bool               # teacher/student knowledge distillation on the public set
    prototypes: bool       # global vectors: surrogate tokens, pairing, server calibration
    modality_dropout: float
    weighting: str         # performance | samples | uniform
    prox_mu: float = 0.0
    rep_kd: bool = False   # representation-level KD on the public set
    align: bool = False    # cross-modal alignment term
    balance: bool = False  # logit-adjusted task loss
    missing_views: bool = False  # image-only and text-only views of paired rows as extra objectives
    server_lr: float = 1.0       # server step on the averaged update (1 = FedAvg)
    spec: ShareSpec = field(default_factory=ShareSpec)   # which tensors are federated
    pools_data: bool = False     # one site holds every client's data (:func:`pools_data`)


def strategy_from_config(cfg) -> Strategy:
    """Build the strategy named by ``cfg.fed.strategy`` with the ablation switches applied
    (:func:`base_strategy`); with ``fed.dp = client``, :func:`client_dp.dp_strategy` then
    switches off what that mechanism does not protect."""
    strategy = base_strategy(cfg)
    if getattr(cfg.fed, "dp", "none") != "none":   # off by default
        strategy = client_dp.dp_strategy(strategy, cfg)
    return strategy


def base_strategy(cfg) -> Strategy:
    """Build the strategy named by ``cfg.fed.strategy`` with the ablation switches applied.

    ``fedavg`` and ``fedprox`` federate everything a client trained (encoders too, per
    modality), as the literature's baselines do; ``-c fed.encoders=local`` keeps encoders
    at the sites for every strategy, ``-c fed.baseline_dropout=true`` gives the baselines
    fedmm's modality dropout (a control for the missing-modality scenarios).
    """
    f, name = cfg.fed, cfg.fed.strategy
    spec = ShareSpec(True, f.encoders, f.bn)
    dropout = cfg.model.modality_dropout
    base_dropout = dropout if f.baseline_dropout else 0.0
    if name == "fedmm":
        return Strategy(name, True, f.kd, f.prototypes, dropout, f.weighting, rep_kd=f.rep_kd, align=f.align,
                        balance=f.balance, missing_views=f.missing_views, server_lr=f.server_lr, spec=spec)
    if name in ("fedavg", "centralized"):
        return Strategy(name, True, False, False, base_dropout, "samples", spec=spec, pools_data=pools_data(name))
    if name == "fedprox":
        return Strategy(name, True, False, False, base_dropout, "samples", cfg.train.prox_mu, spec=spec)
    if name == "local":
        return Strategy(name, False, False, False, base_dropout, "samples", spec=ShareSpec(False, "local", f.bn))
    raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
