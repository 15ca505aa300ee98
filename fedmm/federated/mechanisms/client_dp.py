"""Client-level differential privacy for the shared weights: DP-FedAvg (server half).

``fed.dp = "client"`` turns it on (default ``"none"``: off, and ``server_round`` and
``strategy_from_config`` do not call this module). The mechanism is DP-FedAvg with a
fixed denominator (McMahan et al., "Learning Differentially Private Recurrent Language
Models", ICLR 2018), run by the server on every round's uploads:

    delta_k = clip(upload_k - broadcast, C)        one vector per client, all its shared/* tensors
                                                   (mechanisms/update_clipping.py)
    new     = broadcast + sum_k delta_k / n + N(0, (z C / n)^2)     for every federated tensor

C = ``fed.dp_clip_norm``, z = ``fed.dp_noise_multiplier``, n = ``fed.dp_clients`` (0:
``data.n_clients``), the number of clients expected in a round. Every client is expected
in every round (sampling rate q = 1); a missing client counts as a zero update. Every
weight is 1/n whatever the uploads claim (``fed.weighting``, ``n_train`` and validation
scores are ignored: they would leak and are unchecked claims); ``fed.aggregation`` must
be ``mean``. Adding or removing one client (all of its data) moves ``sum_k delta_k / n``
by at most C / n in L2, so a round is a Gaussian mechanism with noise multiplier z;
:mod:`fedmm.federated.privacy` composes ``fed.rounds`` of them (dp_accounting RDP).
The noise is added to every federated tensor, trained by anyone this round or not; a
noisy BatchNorm running variance is clamped at 0 afterwards (post-processing).

The noise generator is seeded by (``seed``, round): reproducible, but whoever knows the
run seed (it is in ``config.toml``) can regenerate and subtract the noise.
``fed.dp_fresh_noise = true`` seeds it from the operating system instead (not
reproducible); a deployment needs that, and a secret seed.

Client half: none. Clients upload their weights as usual; the server clips and adds the
noise, so this is central DP: the server itself sees raw updates and must be trusted.

Protected (client-level (epsilon, delta), add/remove one client): every federated tensor
the server publishes (each round's broadcast, ``checkpoints/``, the final global model)
and whatever is computed from them alone.

Not sent with ``fed.dp = client`` (``dp_strategy`` switches the mechanisms off):
local K-Means summaries (centroids, counts, label histograms: ``fed.prototypes``),
public-set logits (``fed.kd``) and public-set representations (``fed.rep_kd``). K-Means
assignments, counts and histograms have no bounded sensitivity to one client's data,
and the server combines logits and representations by validation-score teacher
selection and a coordinate-wise median; noise on centroids alone (``fed.dp_clip`` /
``fed.dp_noise``) carries no formal guarantee. ``fed.bn = recompute`` runs as
``shared``: the running statistics travel inside the clipped, noised update and the
final statistics pass (exact pooled moments of every client's images) does not run.

Not protected (sent or published without noise; listed by ``privacy_report``): the
upload metadata (``n_train``, ``n_val``, ``val_classes``, ``val_score(s)``,
``train_loss``, ``trained_groups``, ``modality``), which the server writes per client
into ``metrics.jsonl``; the validation metrics of ``summary.json`` and
``results_per_client.json`` (computed on the clients' own validation splits); site-local tensors
(``fed.encoders = local``, ``fed.bn = local``) inside the deployed models.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedmm.federated.messages import Message
from fedmm.federated.mechanisms import update_clipping

DP_MODES = ("none", "client")
DP_STRATEGIES = ("fedmm", "fedavg", "fedprox")   # the ones that share weights across several clients
NOISE_TAG = 0xD9_F0A6                            # purpose tag of the noise generator's seed


def enabled(fcfg) -> bool:
    """True when ``fed.dp = "client"``."""
    return getattr(fcfg, "dp", "none") == "client"


def expected_clients(cfg) -> int:
    """n, the fixed denominator: ``fed.dp_clients``, or ``data.n_clients`` when that is 0."""
    n = int(getattr(cfg.fed, "dp_clients", 0))
    return n if n > 0 else int(cfg.data.n_clients)


def noise_std(cfg) -> float:
    """The per-coordinate noise std z C / n of the averaged update."""
    f = cfg.fed
    return float(f.dp_noise_multiplier) * float(f.dp_clip_norm) / expected_clients(cfg)


def check_config(cfg) -> None:
    """Raise ValueError for an unknown ``fed.dp`` or, with ``fed.dp = client``, for settings
    under which the Gaussian-mechanism argument does not hold."""
    f = cfg.fed
    mode = getattr(f, "dp", "none")
    if mode not in DP_MODES:
        raise ValueError(f"fed.dp must be one of {DP_MODES}, got {mode!r}")
    if mode == "none":
        return
    z, c, delta = float(f.dp_noise_multiplier), float(f.dp_clip_norm), float(f.dp_delta)
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"fed.dp_noise_multiplier must be a finite number >= 0, got {z}")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"fed.dp_clip_norm must be a finite number > 0 with fed.dp=client, got {c}")
    if not 0 < delta < 1:
        raise ValueError(f"fed.dp_delta must lie in (0, 1), got {delta}")
    if int(f.dp_clients) < 0 or expected_clients(cfg) < 1:
        raise ValueError(f"fed.dp_clients must be >= 0 (0 = data.n_clients), got {f.dp_clients}")
    if f.strategy not in DP_STRATEGIES:
        raise ValueError(f"fed.dp=client needs a strategy that shares weights across clients {DP_STRATEGIES}, "
                         f"got {f.strategy!r}")
    if f.aggregation != "mean":
        raise ValueError(f"fed.dp=client needs fed.aggregation=mean (the sensitivity bound is for a mean), "
                         f"got {f.aggregation!r}")
    if float(f.clip_quantile) > 0:
        raise ValueError("fed.dp=client clips to the fixed fed.dp_clip_norm; fed.clip_quantile (a bound "
                         "computed from the round's updates) must be 0")
    update_clipping.check_clipping(float(f.clip_norm), float(f.clip_quantile))


def dp_strategy(strategy, cfg):
    """The strategy with ``fed.dp = client`` applied: no summaries, no public-set logits or
    representations, uniform weights, BatchNorm ``recompute`` run as ``shared``."""
    check_config(cfg)
    if not enabled(cfg.fed):
        return strategy
    spec = strategy.spec
    if spec.bn == "recompute":
        spec = dataclasses.replace(spec, bn="shared")
    return dataclasses.replace(strategy, kd=False, prototypes=False, rep_kd=False, weighting="uniform", spec=spec)


def noise_generator(seed: int, r: int, fresh: bool = False) -> np.random.Generator:
    """The round's noise generator: seeded by (``seed``, ``r``), or from the OS with ``fresh``."""
    if fresh:
        return np.random.default_rng(np.random.SeedSequence())
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 63), int(r), NOISE_TAG]))


def noisy_average(base: dict[str, np.ndarray], deltas: list[dict[str, np.ndarray]], n: int, clip_norm: float,
                  noise_multiplier: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float64 ``base + sum_k delta_k / n + N(0, (z C / n)^2)`` per tensor, in sorted name order.

    ``deltas``: the clients' (already clipped) updates, name -> array, a missing name
    being a zero update. Noise is drawn for every tensor of ``base``."""
    std = float(noise_multiplier) * float(clip_norm) / int(n)
    out = {}
    for name in sorted(base):
        b = np.asarray(base[name], np.float64)
        total = np.zeros_like(b)
        for d in deltas:
            if name in d:
                total += np.asarray(d[name], np.float64)
        out[name] = b + total / n + rng.standard_normal(b.shape) * std
    return out


def _deltas(shared: dict[str, np.ndarray], upload: Message) -> dict[str, np.ndarray]:
    """The upload's update (float64) per federated tensor with a broadcast counterpart."""
    out = {}
    for key in update_clipping._update_keys(shared, upload):
        name = key[len("shared/"):]
        out[name] = upload.arrays[key].astype(np.float64) - shared[name].astype(np.float64)
    return out


def server_update(shared: dict[str, np.ndarray], uploads: list[Message], strategy, cfg,
                  r: int) -> tuple[dict[str, np.ndarray], dict]:
    """Server step 1 under ``fed.dp = client``: clip, average with weights 1/n, add the noise.

    Returns the new federated tensors (float32) and the round info: ``weights`` (1/n per
    upload), ``effective_clients``, ``dp_noise_std``, ``clip_bound``. Which clients were
    clipped, and their norms, are not reported (they depend on the data)."""
    check_config(cfg)
    if strategy.prototypes or strategy.kd or strategy.rep_kd:
        raise ValueError("fed.dp=client: summaries and public-set outputs are not protected; build the "
                         "strategy with strategy_from_config")
    f, n = cfg.fed, expected_clients(cfg)
    if len(uploads) > n:
        raise ValueError(f"fed.dp=client: {len(uploads)} uploads, more than the {n} expected clients "
                         f"(fed.dp_clients)")
    bound = float(f.dp_clip_norm) if float(f.clip_norm) <= 0 else min(float(f.dp_clip_norm), float(f.clip_norm))
    clipped, _, _ = update_clipping.clip_updates(shared, uploads, bound)
    deltas = [_deltas(shared, u) for u in clipped]
    rng = noise_generator(int(cfg.seed), r, bool(getattr(f, "dp_fresh_noise", False)))
    avg = noisy_average(shared, deltas, n, float(f.dp_clip_norm), float(f.dp_noise_multiplier), rng)
    new = {}
    for name in shared:
        value = avg[name]
        if name.endswith("running_var"):
            value = np.maximum(value, 0.0)      # post-processing: keeps BatchNorm usable
        new[name] = value.astype(np.float32).reshape(shared[name].shape)
    info = {"weights": {u.meta.get("client"): 1.0 / n for u in uploads},
            "effective_clients": float(len(uploads)), "dp_noise_std": noise_std(cfg), "clip_bound": bound}
    return new, info
