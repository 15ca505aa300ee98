"""fed.dp = client: DP-FedAvg on the shared weights (mechanisms/client_dp.py) and its accountant
(federated/privacy.py); the default path is unchanged."""
import dataclasses
import json
import math
from types import SimpleNamespace

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from scipy.optimize import brentq
from scipy.stats import kstest, norm

from fedmm.config import RunConfig, load_config, to_toml
from fedmm.federated.mechanisms import client_dp
from fedmm.federated.mechanisms.contribution import client_weights
from fedmm.federated.messages import Message
from fedmm.federated.privacy import gaussian_epsilon, privacy_report
from fedmm.federated.server import ServerState, global_update, server_round
from fedmm.federated.strategies import base_strategy, strategy_from_config
from fedmm.engines.wire import load_message

HEAD = SimpleNamespace(classifier=SimpleNamespace(net=[SimpleNamespace(out_features=3)]))   # n_classes only


def _cfg(*overrides, preset="default"):
    return load_config(None, list(overrides), preset)


def _dp_cfg(z=1.0, c=1.0, n=4, *extra):
    return _cfg("fed.strategy=fedavg", "fed.dp=client", f"fed.dp_noise_multiplier={z}", f"fed.dp_clip_norm={c}",
                f"fed.dp_clients={n}", *extra)


def _upload(name, arrays, n_train=10, val_score=0.5):
    return Message("upload", {f"shared/{k}": np.asarray(v, np.float32) for k, v in arrays.items()},
                   {"client": name, "n_train": n_train, "val_score": val_score})


def _library_epsilon(z, rounds, delta):
    """The same accountant called directly, one GaussianDpEvent composed per round."""
    acc = rdp.RdpAccountant()
    for _ in range(rounds):
        acc.compose(dp_accounting.GaussianDpEvent(z))
    return acc.get_epsilon(delta)


def _exact_gaussian_epsilon(z, rounds, delta):
    """Independent oracle: T Gaussian mechanisms with noise multiplier z compose exactly to
    mu-GDP with mu = sqrt(T) / z, whose epsilon(delta) solves
    delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Dong, Roth, Su 2019)."""
    mu = math.sqrt(rounds) / z
    f = lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e + norm.logcdf(-e / mu - mu / 2)) - delta  # noqa: E731
    return brentq(f, 0.0, 200.0, xtol=1e-12)


# ---- accountant -------------------------------------------------------------------------------------

@pytest.mark.parametrize("z, rounds, delta", [(0.8, 5, 1e-5), (1.1, 20, 1e-6), (2.0, 3, 1e-5), (5.0, 100, 1e-4)])
def test_epsilon_matches_the_library_and_bounds_the_exact_curve(z, rounds, delta):
    cfg = _dp_cfg(z, 1.0, 4, f"fed.rounds={rounds}", f"fed.dp_delta={delta}")
    report = privacy_report(cfg)
    assert report["dp"] == "client" and report["accountant"] == "dp_accounting RDP"
    assert (report["rounds"], report["delta"], report["noise_multiplier"]) == (rounds, delta, z)
    assert report["epsilon"] == pytest.approx(_library_epsilon(z, rounds, delta), rel=1e-9)
    exact = _exact_gaussian_epsilon(z, rounds, delta)
    assert exact <= report["epsilon"] <= 1.15 * exact       # RDP is an upper bound, and a tight one here


def test_epsilon_decreases_with_noise_and_grows_with_rounds():
    by_z = [privacy_report(_dp_cfg(z, 1.0, 4, "fed.rounds=10"))["epsilon"] for z in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in zip(by_z, by_z[1:]))
    by_rounds = [privacy_report(_dp_cfg(1.0, 1.0, 4, f"fed.rounds={t}"))["epsilon"] for t in (1, 2, 5, 20, 100)]
    assert all(a < b for a, b in zip(by_rounds, by_rounds[1:]))
    assert math.isinf(privacy_report(_dp_cfg(0.0, 1.0, 4))["epsilon"])
    assert math.isinf(gaussian_epsilon(0.0, 3, 1e-5)) and gaussian_epsilon(1.0, 0, 1e-5) == 0.0


def test_report_lists_what_is_unprotected_and_the_default_claims_nothing():
    report = privacy_report(_dp_cfg(1.0, 0.5, 8))
    assert report["noise_std"] == pytest.approx(1.0 * 0.5 / 8) and report["expected_clients"] == 8
    assert report["sampling_rate"] == 1.0 and report["releases"][0]["count"] == report["rounds"]
    text = " ".join(report["unprotected"])
    for word in ("central DP", "n_train", "val_score", "train_loss", "metrics.jsonl", "validation", "seed"):
        assert word in text
    assert any("K-Means" in s for s in report["switched_off"])
    assert json.loads(json.dumps(report)) == report
    assert "seed" not in " ".join(privacy_report(_dp_cfg(1.0, 0.5, 8, "fed.dp_fresh_noise=true"))["unprotected"])
    assert privacy_report(RunConfig()) == {"dp": "none", "note": "no formal guarantee"}
    old = privacy_report(_cfg("fed.dp_clip=1.0", "fed.dp_noise=0.5"))
    assert old["dp"] == "none" and "without a formal guarantee" in old["centroid_noise"]
    assert "differential" not in json.dumps(old).lower()


@pytest.mark.parametrize("bad", [["fed.dp=local"], ["fed.strategy=local"], ["fed.strategy=centralized"],
                                 ["fed.aggregation=median"], ["fed.clip_quantile=0.5"], ["fed.dp_clip_norm=0"],
                                 ["fed.dp_noise_multiplier=-1"], ["fed.dp_delta=0"], ["fed.dp_clients=-2"]])
def test_unsupported_settings_are_refused(bad):
    cfg = _cfg("fed.dp=client", *bad)
    with pytest.raises(ValueError):
        strategy_from_config(cfg)
    with pytest.raises(ValueError):
        privacy_report(cfg)


def test_dp_switches_off_what_it_does_not_protect():
    cfg = _cfg("fed.dp=client", "fed.kd=true")
    s = strategy_from_config(cfg)
    assert not (s.prototypes or s.kd or s.rep_kd) and s.weighting == "uniform" and s.spec.bn == "shared"
    assert s.share and s.align == base_strategy(cfg).align
    with pytest.raises(ValueError, match="not protected"):
        client_dp.server_update({}, [], base_strategy(cfg), cfg, 0)


# ---- DP-FedAvg aggregation --------------------------------------------------------------------------

def test_updates_are_clipped_and_weighted_uniformly_over_the_expected_clients():
    shared = {"classifier.net.0.bias": np.zeros(2, np.float32), "fusion.i2t.bg": np.ones(3, np.float32)}
    big = _upload("a", {"classifier.net.0.bias": [30.0, 40.0], "fusion.i2t.bg": [1, 1, 1]}, n_train=10**6)
    small = _upload("b", {"classifier.net.0.bias": [0.3, 0.4]}, n_train=1, val_score=0.0)
    other = _upload("c", {"fusion.i2t.bg": [1.0, 1.0, 1.5]}, n_train=5, val_score=1.0)
    cfg = _dp_cfg(0.0, 1.0, 4)                  # z = 0: no noise, the aggregate is exact
    strategy = strategy_from_config(cfg)
    new, info = client_dp.server_update(shared, [big, small, other], strategy, cfg, 0)
    # a: norm 50 -> clipped to (0.6, 0.8); b, c below the bound; each weighted 1/4 (d, expected, sent nothing)
    np.testing.assert_allclose(new["classifier.net.0.bias"], [(0.6 + 0.3) / 4, (0.8 + 0.4) / 4], rtol=1e-6)
    np.testing.assert_allclose(new["fusion.i2t.bg"], [1.0, 1.0, 1.0 + 0.5 / 4], rtol=1e-6)
    assert info["weights"] == {"a": 0.25, "b": 0.25, "c": 0.25} and info["clip_bound"] == 1.0
    assert "clipped" not in info          # who was clipped (and by how much) depends on the data
    claims = [_upload(u.meta["client"], {k[7:]: v for k, v in u.arrays.items()}, n_train=3, val_score=0.9)
              for u in (big, small, other)]
    again, _ = client_dp.server_update(shared, claims, strategy, cfg, 0)
    assert all(np.array_equal(new[k], again[k]) for k in shared)   # claims buy nothing
    with pytest.raises(ValueError, match="expected"):
        client_dp.server_update(shared, [big, small, other], strategy, _dp_cfg(0.0, 1.0, 2), 0)


def test_noise_std_is_z_c_over_n_float64():
    z, c, n, draws = 1.3, 0.7, 5, 1_000_000
    sigma = z * c / n
    base = {"w": np.zeros(draws), "v": np.zeros(draws)}
    out = client_dp.noisy_average(base, [], n, c, z, np.random.default_rng(11))
    x = out["w"]
    assert x.dtype == np.float64
    # sample variance of N normal draws: sd(s^2 / sigma^2) = sqrt(2 / (N - 1)); 5 sd (p ~ 6e-7)
    assert abs(x.var(ddof=1) / sigma**2 - 1) < 5 * math.sqrt(2 / (draws - 1))
    assert abs(x.mean()) < 5 * sigma / math.sqrt(draws)
    assert kstest(x / sigma, "norm").pvalue > 1e-4
    assert abs(np.corrcoef(x, out["v"])[0, 1]) < 5 / math.sqrt(draws)    # tensors get independent noise


def test_server_noise_matches_and_is_reproducible_by_seed():
    draws, z, c, n = 400_000, 2.0, 0.5, 4
    shared = {"classifier.net.0.weight": np.zeros(draws, np.float32), "image_encoder.bn.running_var":
              np.full(draws, 0.01, np.float32)}
    up = [_upload("a", {"classifier.net.0.weight": np.zeros(draws)})]
    cfg = _dp_cfg(z, c, n)
    strategy = strategy_from_config(cfg)
    first, info = client_dp.server_update(shared, up, strategy, cfg, 3)
    sigma = z * c / n
    assert info["dp_noise_std"] == sigma
    x = first["classifier.net.0.weight"].astype(np.float64)
    assert abs(x.var(ddof=1) / sigma**2 - 1) < 5 * math.sqrt(2 / (draws - 1))
    assert (first["image_encoder.bn.running_var"] >= 0).all()           # clamped after the noise
    again, _ = client_dp.server_update(shared, up, strategy, cfg, 3)
    assert all(np.array_equal(first[k], again[k]) for k in shared)
    other_round, _ = client_dp.server_update(shared, up, strategy, cfg, 4)
    other_seed = dataclasses.replace(cfg, seed=1)
    reseeded, _ = client_dp.server_update(shared, up, strategy, other_seed, 3)
    for a in (other_round, reseeded):
        assert abs(np.corrcoef(x, a["classifier.net.0.weight"])[0, 1]) < 5 / math.sqrt(draws)
    fresh = dataclasses.replace(cfg, fed=dataclasses.replace(cfg.fed, dp_fresh_noise=True))
    f1, _ = client_dp.server_update(shared, up, strategy, fresh, 3)
    f2, _ = client_dp.server_update(shared, up, strategy, fresh, 3)
    assert not np.array_equal(f1["classifier.net.0.weight"], f2["classifier.net.0.weight"])


def test_server_round_under_dp_publishes_the_noised_average():
    cfg = _dp_cfg(1.0, 1.0, 3)
    shared = {"classifier.net.0.bias": np.zeros(4, np.float32)}
    ups = [_upload(str(i), {"classifier.net.0.bias": np.full(4, 0.1 * i)}) for i in range(3)]
    state, info = server_round(ServerState(2, dict(shared)), ups, strategy_from_config(cfg), cfg, HEAD, 10)
    ref, _ = client_dp.server_update(shared, ups, strategy_from_config(cfg), cfg, 2)
    assert np.array_equal(state.shared["classifier.net.0.bias"], ref["classifier.net.0.bias"])
    assert state.gv is None and state.public_index is None and state.published == {}
    assert info["weights"] == {"0": 1 / 3, "1": 1 / 3, "2": 1 / 3} and info["effective_clients"] == 3


# ---- default path -----------------------------------------------------------------------------------

def test_default_aggregation_is_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    shared = {"classifier.net.0.bias": rng.standard_normal(5).astype(np.float32),
              "fusion.i2t.bg": rng.standard_normal(3).astype(np.float32)}
    ups = [_upload(str(i), {k: v + rng.standard_normal(v.shape) for k, v in shared.items()}, n_train=5 + 7 * i,
                   val_score=0.2 * i) for i in range(4)]
    for cfg in (_cfg("fed.strategy=fedavg"), _cfg("fed.strategy=fedavg", "fed.dp_noise_multiplier=3",
                                                  "fed.dp_clip_norm=0.01", "fed.dp_clients=2")):
        assert cfg.fed.dp == "none"
        strategy = strategy_from_config(cfg)
        assert strategy == base_strategy(cfg)
        state, info = server_round(ServerState(0, dict(shared)), ups, strategy, cfg, HEAD, 10)
        expected = global_update(shared, ups, weights=client_weights(ups, "samples", cfg.fed.tau, 3))
        assert all(np.array_equal(state.shared[k], expected[k]) for k in shared)
        assert "dp_noise_std" not in info
    default = RunConfig()
    assert strategy_from_config(default) == base_strategy(default)
    assert privacy_report(default)["dp"] == "none"
    dp = load_config(None, ["fed.dp=client", "fed.dp_delta=1e-7", "fed.dp_clients=12"])
    (tmp_path / "c.toml").write_text(to_toml(dp))
    assert load_config(tmp_path / "c.toml") == dp                     # the new keys round-trip


def test_smoke_federation_with_client_dp(tmp_path):
    from fedmm.engines.local import run_simulation      # the engine, only for this end-to-end run

    cfg = load_config(None, [f"cache={tmp_path / 'cache'}", f"out={tmp_path}", "name=dp", "workers=1",
                             "tracking=none", "fed.dp=client", "fed.dp_noise_multiplier=0.5",
                             "fed.dp_clip_norm=5.0", "fed.rounds=2"], "smoke")
    run = tmp_path / "dp"
    summary = run_simulation(cfg, run)
    assert set(summary["test"]) == {"full", "image_only", "text_only"}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    clients = [r for r in rows if r["client"] != "global"]
    assert len(clients) == 2 * cfg.data.n_clients
    assert all(r["weight"] == pytest.approx(1 / cfg.data.n_clients) for r in clients)
    assert all(r["n_prototypes"] == 0 for r in rows if r["client"] == "global")
    assert "bn_stats" not in json.loads((run / "checkpoints" / "latest.json").read_text())
    state = ServerState.from_message(load_message(run / "checkpoints" / "server_round_0002", "broadcast"))
    assert state.gv is None and all(np.isfinite(v).all() for v in state.shared.values())
    assert all((v >= 0).all() for k, v in state.shared.items() if k.endswith("running_var"))
    report = privacy_report(cfg)
    assert report["epsilon"] == pytest.approx(_library_epsilon(0.5, 2, 1e-5), rel=1e-9)
    saved = json.loads((run / "summary.json").read_text())["privacy"]     # summary.json reports epsilon, delta
    assert saved["dp"] == "client" and saved["delta"] == 1e-5
    assert saved["epsilon"] == pytest.approx(report["epsilon"], rel=1e-12)
