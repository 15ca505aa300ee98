"""Privacy accounting: what a run's configuration guarantees, with epsilon from a maintained library.

``privacy_report(cfg)`` describes the guarantee of ``fed.dp`` (docs in
:mod:`fedmm.federated.mechanisms.client_dp`):

- ``fed.dp = "none"``: no formal guarantee. Noise on centroids (``fed.dp_clip`` /
  ``fed.dp_noise``) is reported as such: it comes with no formal guarantee (counts,
  histograms, weights and public-set outputs go out without noise, and the K-Means
  assignment itself depends on every sample).
- ``fed.dp = "client"``: client-level (epsilon, delta) for everything the server
  publishes from the shared weights. Each round is one Gaussian mechanism with noise
  multiplier z = ``fed.dp_noise_multiplier`` (sensitivity C / n, noise std z C / n),
  every client takes part in every round (sampling rate q = 1, no amplification), and
  ``fed.rounds`` of them are composed by ``dp_accounting.rdp.RdpAccountant`` (Google's
  dp-accounting; add/remove-one-client adjacency) and converted to epsilon at
  ``fed.dp_delta``. Nothing else is released from the clients' data under noise (the
  summaries, public-set outputs and statistics pass are switched off), so nothing else
  enters the composition; what is released without protection is listed under
  ``unprotected``.

``dp_accounting`` is imported only when an epsilon is computed.
"""
from __future__ import annotations

from fedmm.federated.mechanisms import client_dp

ACCOUNTANT = "dp_accounting RDP"

UNPROTECTED = [
    "raw client updates as the server receives them (central DP: the server clips and adds the noise, "
    "so it must be trusted)",
    "upload metadata every round (n_train, n_val, val_classes, val_score, val_scores, train_loss, "
    "trained_groups, modality), sent to the server and written per client to metrics.jsonl and the "
    "tensorboard events (with upload_bytes, which reveals the trained groups)",
    "validation metrics in summary.json 'val' and results_per_client.json (computed on the clients' "
    "own validation splits with their deployed models)",
]
NOISE_SEED = ("the noise generator is seeded by (seed, round) and the seed is in config.toml: whoever knows "
              "it can regenerate and remove the noise (set fed.dp_fresh_noise=true, with a secret seed, "
              "in a deployment)")
SWITCHED_OFF = [
    "local K-Means summaries (centroids, counts, label histograms): not sent, fed.prototypes off",
    "public-set logits: not sent, fed.kd off",
    "public-set representations: not sent, fed.rep_kd off",
    "contribution weights from n_train / validation scores: replaced by 1/n (fed.weighting ignored)",
]


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """epsilon(delta) of ``releases`` compositions of a Gaussian mechanism with noise multiplier
    ``noise_multiplier`` (no subsampling), from ``dp_accounting``'s RDP accountant.
    ``inf`` for a noise multiplier of 0; 0 for no release."""
    import dp_accounting
    from dp_accounting import rdp

    if int(releases) <= 0:
        return 0.0
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(float(noise_multiplier)), int(releases)))
    return float(accountant.get_epsilon(float(delta)))


def gaussian_releases(cfg) -> list[dict]:
    """The Gaussian releases of one run under ``fed.dp = client``: ``[{"what", "count"}]``.
    One per round (the shared weights); summaries, public-set outputs and the statistics pass
    are switched off by :func:`client_dp.dp_strategy`, so they add none."""
    return [{"what": "shared weights, DP-FedAvg (one per round)", "count": int(cfg.fed.rounds)}]


def _unprotected(cfg) -> list[str]:
    out = list(UNPROTECTED)
    f = cfg.fed
    if f.encoders == "local" or f.bn == "local":
        out.append("site-local tensors (fed.encoders=local / fed.bn=local) inside each client's deployed model "
                   "and the test metrics computed with it")
    if not bool(getattr(f, "dp_fresh_noise", False)):
        out.append(NOISE_SEED)
    return out


def privacy_report(cfg) -> dict:
    """What ``cfg`` guarantees, as a JSON-able dict (``epsilon`` may be ``inf``: z = 0).

    ``{"dp": "none", "note": ...}`` without ``fed.dp``, else ``dp, unit, mechanism, epsilon,
    delta, noise_multiplier, clip_norm, expected_clients, noise_std, rounds, releases,
    sampling_rate, accountant, switched_off, unprotected``. Raises ValueError for a
    configuration ``fed.dp = client`` does not support."""
    client_dp.check_config(cfg)
    f = cfg.fed
    if not client_dp.enabled(f):
        out = {"dp": "none", "note": "no formal guarantee"}
        if float(f.dp_clip) > 0:
            out["centroid_noise"] = (f"fed.dp_clip={float(f.dp_clip)}, fed.dp_noise={float(f.dp_noise)}: "
                                     "noise on centroids without a formal guarantee")
        return out
    releases = gaussian_releases(cfg)
    total = sum(r["count"] for r in releases)
    z, delta = float(f.dp_noise_multiplier), float(f.dp_delta)
    switched = list(SWITCHED_OFF)
    if f.bn == "recompute":
        switched.append("BatchNorm statistics pass (exact pooled moments): off, fed.bn=recompute runs as shared "
                        "(running statistics inside the clipped, noised update)")
    return {
        "dp": "client",
        "unit": "one client (all of its data); add/remove-one neighbouring relation",
        "mechanism": "DP-FedAvg: update clipped to clip_norm, fixed weights 1/n, Gaussian noise "
                     "N(0, (noise_multiplier * clip_norm / n)^2) on every federated tensor",
        "epsilon": gaussian_epsilon(z, total, delta),
        "delta": delta,
        "noise_multiplier": z,
        "clip_norm": float(f.dp_clip_norm),
        "expected_clients": client_dp.expected_clients(cfg),
        "noise_std": client_dp.noise_std(cfg),
        "rounds": int(f.rounds),
        "releases": releases,
        "sampling_rate": 1.0,
        "accountant": ACCOUNTANT,
        "switched_off": switched,
        "unprotected": _unprotected(cfg),
    }
