"""Simulated hostile clients: an attack harness inside the normal client step (``attack.*``).

With ``attack.kind`` other than ``none`` the clients named in ``attack.clients``
train honestly, and then :func:`maybe_attack` (called at the end of
:func:`fedmm.federated.client.client_round`) rewrites what they would upload.
The attack therefore runs through every transport unchanged (in-process, files,
Flower), and the rewritten upload is a well-formed message: the same names,
shapes and dtype (float32), finite values, metadata inside the ranges
``check_upload`` accepts.

Kinds (``u`` = uploaded, ``b`` = broadcast, ``t`` = honestly trained shared weights;
BatchNorm running statistics are sent as trained, since a rewritten running
variance can turn negative, which no careful attacker would send):

- ``signflip``: ``u = b - (t - b)``, the negated update;
- ``scale``: ``u = b + attack.scale * (t - b)``;
- ``noise``: ``u = t + N(0, (attack.noise * rms)^2)``, ``rms`` = one RMS of ``t - b`` over all rewritten weights;
- ``claims``: meta ``n_train`` = ``n_val`` = ``attack.claim_n``, ``val_score`` and every
  ``val_scores`` entry = 1.0, ``val_classes`` = C (the arrays are honest);
- ``logits``: every ``public/<view>_logits`` [M, C] = ``attack.logit_margin`` x
  one-hot(``attack.target_class`` mod C); every ``public/<mod>_reps`` [M, d] negated;
- ``centroids``: ``summary/<mod>_centroids`` [k, d] x ``attack.centroid_scale``;
  ``_counts`` [k] and ``_hist`` [k, C] x ``attack.count_scale``.

Which clients: ``attack.clients`` when given; otherwise :func:`resolve_attackers`
(called by ``prepare_federation`` when the federation is built, before the run
directory and its ``config.toml`` are written) fills it with the first
``attack.n`` names of a seeded permutation of the multimodal clients (seed
``(seed, ATTACK_SALT)``; a larger ``n`` keeps the smaller ``n``'s attackers). The
resolved names are thereby recorded in ``config.toml`` and published to the
clients of the files and Flower transports. An attacked upload carries meta
``"attacker": true`` for the logs; the server never reads it.
"""
from __future__ import annotations

import math

import numpy as np

from fedmm.federated.messages import Message
from fedmm.federated.strategies import pools_data

KINDS = ("none", "signflip", "scale", "noise", "claims", "logits", "centroids")
WEIGHT_KINDS = ("signflip", "scale", "noise")
ATTACK_SALT = 0xA77AC
BN_STATISTICS = (".running_mean", ".running_var")   # sent as trained by the weight attacks


def check_attack(acfg) -> None:
    """Raise ValueError for an unknown ``attack.kind`` or a value out of range."""
    if acfg.kind not in KINDS:
        raise ValueError(f"attack.kind must be one of {', '.join(KINDS)}, got {acfg.kind!r}")
    if acfg.n < 0:
        raise ValueError(f"attack.n must be >= 0, got {acfg.n}")
    for key in ("scale", "noise", "logit_margin", "centroid_scale", "count_scale"):
        if not math.isfinite(float(getattr(acfg, key))):
            raise ValueError(f"attack.{key} must be finite, got {getattr(acfg, key)}")
    if acfg.noise < 0 or acfg.count_scale < 0:
        raise ValueError("attack.noise and attack.count_scale must be >= 0")
    if not 1 <= acfg.claim_n < 2**53:
        raise ValueError(f"attack.claim_n must lie in [1, 2**53), got {acfg.claim_n}")
    if not isinstance(acfg.clients, list) or not all(isinstance(c, str) for c in acfg.clients):
        raise ValueError("attack.clients must be a list of client names")


def choose_attackers(seed: int, roster: list[tuple[str, str]], n: int) -> list[str]:
    """The first ``n`` multimodal clients of a permutation seeded by ``(seed, ATTACK_SALT)``.

    ``roster``: (name, modality) of every client in federation order. Raises ValueError
    when the federation has fewer than ``n`` multimodal clients."""
    multimodal = [name for name, modality in roster if modality == "multimodal"]
    if n > len(multimodal):
        raise ValueError(f"attack.n={n}, but the federation has only {len(multimodal)} multimodal clients")
    order = np.random.default_rng([ATTACK_SALT, int(seed) % 2**32]).permutation(len(multimodal))
    return [multimodal[i] for i in order[:n]]


def resolve_attackers(cfg, roster: list[tuple[str, str]]) -> list[str]:
    """Check ``cfg.attack`` and fill ``cfg.attack.clients`` (when empty) with :func:`choose_attackers`.

    Nothing happens (and nothing is checked) with ``attack.kind = none``. Raises ValueError
    for attacks on the centralized baseline, names outside the federation or no attacker."""
    acfg = getattr(cfg, "attack", None)
    if acfg is None or acfg.kind == "none":
        return []
    check_attack(acfg)
    if pools_data(cfg.fed.strategy):
        raise ValueError("attack.kind needs a federation; the centralized baseline has a single client")
    names = [name for name, _ in roster]
    if acfg.clients:
        unknown = sorted(set(acfg.clients) - set(names))
        if unknown:
            raise ValueError(f"attack.clients names clients outside the federation: {unknown}")
        return list(acfg.clients)
    if acfg.n < 1:
        raise ValueError(f"attack.kind={acfg.kind} needs attack.n >= 1 (or attack.clients)")
    acfg.clients = choose_attackers(int(cfg.seed), roster, acfg.n)
    return list(acfg.clients)


def _weight_keys(arrays: dict, broadcast: dict) -> list[str]:
    """The shared weights a weight attack rewrites: in the upload and the broadcast, no BN statistics."""
    return [k for k in arrays if k.startswith("shared/") and k in broadcast and not k.endswith(BN_STATISTICS)
            and arrays[k].shape == broadcast[k].shape]


def attack_weights(arrays: dict, broadcast: dict, acfg, rng: np.random.Generator) -> dict:
    """``signflip`` / ``scale`` / ``noise`` on the shared weights (float64 arithmetic, float32 out)."""
    keys = _weight_keys(arrays, broadcast)
    out = dict(arrays)
    if not keys:
        return out
    deltas = {k: arrays[k].astype(np.float64) - broadcast[k].astype(np.float64) for k in keys}
    if acfg.kind == "noise":
        size = sum(d.size for d in deltas.values())
        rms = math.sqrt(sum(float((d * d).sum()) for d in deltas.values()) / max(size, 1))
        std = float(acfg.noise) * rms
        for k in keys:   # noise drawn in upload order: a function of (seed, round, client)
            out[k] = (arrays[k].astype(np.float64) + rng.normal(0.0, 1.0, arrays[k].shape) * std).astype(np.float32)
        return out
    factor = -1.0 if acfg.kind == "signflip" else float(acfg.scale)
    for k in keys:
        out[k] = (broadcast[k].astype(np.float64) + factor * deltas[k]).astype(np.float32)
    return out


def attack_claims(meta: dict, acfg, n_classes: int) -> dict:
    """``claims``: the largest training / validation claims the upload checks accept."""
    out = dict(meta)
    out.update(n_train=int(acfg.claim_n), n_val=int(acfg.claim_n), val_classes=int(n_classes), val_score=1.0,
               val_scores={view: 1.0 for view in meta.get("val_scores", {})})
    return out


def attack_public(arrays: dict, acfg, n_classes: int) -> dict:
    """``logits``: confident logits on one fixed class [M, C]; public representations negated [M, d]."""
    out = dict(arrays)
    for k, a in arrays.items():
        if k.startswith("public/") and k.endswith("_logits"):
            fake = np.zeros(a.shape, np.float32)   # [M, C]
            fake[:, int(acfg.target_class) % n_classes] = float(acfg.logit_margin)
            out[k] = fake
        elif k.startswith("public/") and k.endswith("_reps"):
            out[k] = (-a).astype(np.float32)       # [M, d]
    return out


def attack_summaries(arrays: dict, acfg) -> dict:
    """``centroids``: local K-Means centroids [k, d] moved far away, counts [k] and histograms [k, C] inflated."""
    out = dict(arrays)
    for k, a in arrays.items():
        if k.startswith("summary/") and k.endswith("_centroids"):
            out[k] = (a.astype(np.float64) * float(acfg.centroid_scale)).astype(np.float32)
        elif k.startswith("summary/") and k.endswith(("_counts", "_hist")):
            out[k] = (a.astype(np.float64) * float(acfg.count_scale)).astype(np.float32)
    return out


def attack_upload(msg: Message, broadcast: Message, acfg, n_classes: int, rng: np.random.Generator) -> Message:
    """The upload a hostile client sends instead of ``msg`` (``msg`` itself is left as it is).

    Raises ValueError when the rewrite would not be finite (e.g. an ``attack.scale`` so large that
    the weights overflow float32): attackers send well-formed messages."""
    arrays, meta = dict(msg.arrays), dict(msg.meta)
    with np.errstate(over="ignore", invalid="ignore"):   # an overflow is caught below, as a ValueError
        if acfg.kind in WEIGHT_KINDS:
            arrays = attack_weights(arrays, broadcast.arrays, acfg, rng)
        elif acfg.kind == "claims":
            meta = attack_claims(meta, acfg, n_classes)
        elif acfg.kind == "logits":
            arrays = attack_public(arrays, acfg, n_classes)
        elif acfg.kind == "centroids":
            arrays = attack_summaries(arrays, acfg)
        else:
            raise ValueError(f"attack.kind must be one of {', '.join(KINDS[1:])} here, got {acfg.kind!r}")
    for k, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"attack {acfg.kind}: {k} would not be finite; lower the attack's scale")
    meta["attacker"] = True
    return Message(msg.kind, arrays, meta)


def maybe_attack(msg: Message, broadcast: Message, cfg, data) -> Message:
    """Client-step hook: ``msg`` unchanged (the same object) unless ``data.name`` is an attacker.

    ``data`` is the client's :class:`fedmm.federated.client.ClientData` (name, index, classes).
    Raises ValueError when an attack is configured but its clients were never resolved."""
    acfg = getattr(cfg, "attack", None)
    if acfg is None or acfg.kind == "none":
        return msg
    if not acfg.clients:
        raise ValueError(f"attack.kind={acfg.kind}: attack.clients is empty; set it, or let prepare_federation "
                         "choose attack.n clients")
    if data.name not in acfg.clients:
        return msg
    r = int(msg.meta.get("round", 0))
    rng = np.random.default_rng([ATTACK_SALT, int(cfg.seed) % 2**32, r, int(data.index)])
    return attack_upload(msg, broadcast, acfg, len(data.classes), rng)
