"""Hostile clients (fedmm/federated/attacks.py) and the update-norm defence
(fedmm/federated/mechanisms/update_clipping.py): each attack changes exactly what it should and still
passes check_upload; clipping bounds every update; one smoke federation runs with an attacker."""
import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fuzz_cases import CLIENTS, N_LOGITS, C, D, upload

from fedmm.config import RunConfig, load_config, set_key
from fedmm.engines.wire import check_upload, upload_spec
from fedmm.federated import attacks
from fedmm.federated.attacks import choose_attackers, maybe_attack, resolve_attackers
from fedmm.federated.mechanisms import update_clipping
from fedmm.federated.mechanisms.contribution import client_weights
from fedmm.federated.messages import Message
from fedmm.federated.server import ServerState, global_update, server_round
from fedmm.federated.strategies import strategy_from_config
from fedmm.models.head import SharedHead
from fedmm.engines.wire import save_message

BN = "image_encoder.features.1.running_var"
SHARED = {"classifier.net.0.weight": (C, D), "classifier.net.0.bias": (C,), "fusion.i2t.wq": (16, 16), BN: (D,)}
SPEC = upload_spec(SHARED, D, C)
WEIGHTS = [f"shared/{k}" for k in SHARED if k != BN]
DATA = SimpleNamespace(name="client_0", index=0, classes=[f"c{i}" for i in range(C)])


def _broadcast(seed: int = 7) -> Message:
    rng = np.random.default_rng(seed)
    return Message("broadcast", {f"shared/{k}": rng.normal(size=s).astype(np.float32) for k, s in SHARED.items()},
                   {"round": 0})


def _cfg(kind: str = "none", **values) -> RunConfig:
    cfg = RunConfig()
    set_key(cfg, "attack.kind", kind)
    set_key(cfg, "attack.clients", '["client_0"]')
    for k, v in values.items():
        set_key(cfg, f"attack.{k}", v)
    return cfg


def _attacked(kind: str, **values) -> tuple[Message, Message, Message]:
    """(honest upload, its pristine copy, attacked upload) of client_0."""
    honest = upload(spec=SPEC, n_logits=N_LOGITS, val_scores={"full": 0.5, "image_only": 0.4})
    pristine = copy.deepcopy(honest)
    return honest, pristine, maybe_attack(honest, _broadcast(), _cfg(kind, **values), DATA)


def _same(a: Message, b: Message, keys) -> None:
    for k in keys:
        assert a.arrays[k].dtype == b.arrays[k].dtype and a.arrays[k].tobytes() == b.arrays[k].tobytes(), k


def _save_bytes(msg: Message, stem: Path) -> tuple[bytes, bytes]:
    save_message(msg, stem)
    return stem.with_suffix(".safetensors").read_bytes(), stem.with_suffix(".json").read_bytes()


def test_default_config_and_honest_clients_leave_uploads_byte_identical(tmp_path):
    honest = upload(spec=SPEC, n_logits=N_LOGITS)
    pristine = copy.deepcopy(honest)
    assert maybe_attack(honest, _broadcast(), RunConfig(), DATA) is honest          # attack.kind = none
    other = SimpleNamespace(name="client_1", index=1, classes=DATA.classes)        # not an attacker
    assert maybe_attack(honest, _broadcast(), _cfg("signflip"), other) is honest
    assert _save_bytes(honest, tmp_path / "a") == _save_bytes(pristine, tmp_path / "b")
    assert "attacker" not in honest.meta
    cfg = RunConfig()
    assert resolve_attackers(cfg, [("client_0", "multimodal")]) == [] and cfg.attack.clients == []


@pytest.mark.parametrize("kind", ["signflip", "scale", "noise", "claims", "logits", "centroids"])
def test_attacked_upload_is_well_formed_and_marked(kind):
    honest, pristine, bad = _attacked(kind)
    assert check_upload(bad, SPEC, 0, CLIENTS, n_logits=N_LOGITS) == "client_0"
    assert set(bad.arrays) == set(honest.arrays)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in bad.arrays.values())
    assert bad.meta["attacker"] is True
    _same(honest, pristine, honest.arrays)                 # the honest message is not modified
    assert honest.meta == pristine.meta
    changed = {k for k in honest.arrays if honest.arrays[k].tobytes() != bad.arrays[k].tobytes()}
    expected = {"signflip": set(WEIGHTS), "scale": set(WEIGHTS), "noise": set(WEIGHTS), "claims": set(),
                "logits": {k for k in SPEC if k.startswith("public/")},
                "centroids": {k for k in SPEC if k.startswith("summary/")}}[kind]
    assert changed == expected
    meta_changed = {k for k in bad.meta if bad.meta[k] != honest.meta.get(k)}
    assert meta_changed == ({"attacker", "n_train", "n_val", "val_classes", "val_score", "val_scores"}
                            if kind == "claims" else {"attacker"})


@pytest.mark.parametrize("kind,factor", [("signflip", -1.0), ("scale", 10.0), ("scale", -3.5)])
def test_weight_attacks_rewrite_the_update_float64_reference(kind, factor):
    honest, _, bad = _attacked(kind, scale=factor)
    b = _broadcast().arrays
    for k in WEIGHTS:
        ref = b[k].astype(np.float64) + factor * (honest.arrays[k].astype(np.float64) - b[k].astype(np.float64))
        np.testing.assert_allclose(bad.arrays[k], ref, rtol=1e-6, atol=1e-6)
    _same(bad, honest, [f"shared/{BN}"])                  # BatchNorm statistics sent as trained


def test_noise_attack_has_the_requested_std_and_is_seeded():
    honest, _, bad = _attacked("noise", noise=2.0)
    b = _broadcast().arrays
    delta = np.concatenate([(honest.arrays[k].astype(np.float64) - b[k]).ravel() for k in WEIGHTS])
    noise = np.concatenate([(bad.arrays[k].astype(np.float64) - honest.arrays[k]).ravel() for k in WEIGHTS])
    rms = math.sqrt(float((delta ** 2).mean()))
    assert noise.size > 250 and abs(noise.std() / (2.0 * rms) - 1) < 0.15 and abs(noise.mean()) < 0.3 * rms
    again = maybe_attack(copy.deepcopy(honest), _broadcast(), _cfg("noise", noise=2.0), DATA)
    _same(bad, again, WEIGHTS)                             # a function of (seed, round, client)
    later = copy.deepcopy(honest)
    later.meta["round"] = 1
    later = maybe_attack(later, _broadcast(), _cfg("noise", noise=2.0), DATA)
    assert not np.array_equal(later.arrays[WEIGHTS[0]], bad.arrays[WEIGHTS[0]])


def test_claims_logits_and_centroids_values():
    _, _, claims = _attacked("claims")
    assert (claims.meta["n_train"], claims.meta["n_val"], claims.meta["val_classes"]) == (10**6, 10**6, C)
    assert claims.meta["val_score"] == 1.0 and claims.meta["val_scores"] == {"full": 1.0, "image_only": 1.0}
    honest, _, logits = _attacked("logits")
    for k in (k for k in SPEC if k.endswith("_logits")):
        expected = np.zeros((N_LOGITS, C), np.float32)
        expected[:, C - 1] = 10.0                          # target_class -1: the last class
        np.testing.assert_array_equal(logits.arrays[k], expected)
    for k in (k for k in SPEC if k.endswith("_reps")):
        np.testing.assert_array_equal(logits.arrays[k], -honest.arrays[k])
    honest, _, cents = _attacked("centroids")
    for k in (k for k in SPEC if k.startswith("summary/")):
        factor = 100.0
        np.testing.assert_allclose(cents.arrays[k], honest.arrays[k].astype(np.float64) * factor, rtol=1e-6)


def test_overflowing_attack_is_refused_not_sent():
    with pytest.raises(ValueError, match="finite"):
        _attacked("scale", scale=1e38)


def test_attackers_are_a_seeded_nested_choice_among_multimodal_clients():
    roster = [(f"client_{k}", "image_only" if k < 2 else "text_only" if k < 4 else "multimodal") for k in range(12)]
    three = choose_attackers(0, roster, 3)
    assert len(set(three)) == 3 and all(int(n.split("_")[1]) >= 4 for n in three)
    assert choose_attackers(0, roster, 5)[:3] == three == choose_attackers(0, roster, 3)
    assert any(choose_attackers(s, roster, 3) != three for s in range(1, 5))
    with pytest.raises(ValueError, match="multimodal"):
        choose_attackers(0, roster, 9)
    cfg = load_config(None, ["attack.kind=signflip", "attack.n=3"])
    assert resolve_attackers(cfg, roster) == three and cfg.attack.clients == three
    assert resolve_attackers(cfg, roster) == three           # resolved names are kept (resume)
    for bad, err in ((["attack.kind=bogus", "attack.n=1"], "attack.kind"), (["attack.kind=scale"], "attack.n"),
                     (["attack.kind=noise", 'attack.clients=["client_99"]'], "outside"),
                     (["attack.kind=noise", "attack.n=1", "fed.strategy=centralized"], "centralized")):
        with pytest.raises(ValueError, match=err):
            resolve_attackers(load_config(None, bad), roster)
    with pytest.raises(ValueError, match="empty"):
        maybe_attack(upload(spec=SPEC), _broadcast(), load_config(None, ["attack.kind=noise"]), DATA)
    assert attacks.KINDS[0] == "none"


def _uploads_with_updates(norms: list[float], seed: int = 3) -> tuple[dict, list[Message]]:
    """A broadcast and one upload per norm whose update over all federated tensors has that L2 norm."""
    rng = np.random.default_rng(seed)
    shared = {k: v for k, v in ((k[len("shared/"):], a) for k, a in _broadcast().arrays.items())}
    ups = []
    for i, norm in enumerate(norms):
        d = {k: rng.normal(size=s) for k, s in SHARED.items()}
        scale = norm / math.sqrt(sum(float((x ** 2).sum()) for x in d.values()))
        arrays = {f"shared/{k}": (shared[k] + d[k] * scale).astype(np.float32) for k in SHARED}
        ups.append(Message("upload", arrays, {"client": f"client_{i}", "n_train": 10 + i, "val_score": 0.5}))
    return shared, ups


def _norm64(shared: dict, up: Message) -> float:
    return math.sqrt(sum(float(((up.arrays[f"shared/{k}"].astype(np.float64) - shared[k]) ** 2).sum())
                         for k in SHARED))


def test_clipping_bounds_every_update_and_leaves_small_ones_untouched():
    norms = [0.5, 1.9, 2.5, 40.0, 1e4]
    shared, ups = _uploads_with_updates(norms)
    out, clipped, bound = update_clipping.clip_updates(shared, ups, 2.0)
    assert bound == 2.0 and [c["client"] for c in clipped] == ["client_2", "client_3", "client_4"]
    for u, o, n in zip(ups, out, norms):
        ref = _norm64(shared, u)
        assert ref == pytest.approx(n, rel=1e-5)
        if n <= bound:
            assert o is u
            continue
        assert _norm64(shared, o) <= bound * (1 + 1e-5) and _norm64(shared, o) == pytest.approx(bound, rel=1e-5)
        row = next(c for c in clipped if c["client"] == u.meta["client"])
        assert row["bound"] == bound and row["norm"] == pytest.approx(ref, rel=1e-12)
        for k in SHARED:                                   # same direction: delta * bound / norm (float64 reference)
            want = shared[k].astype(np.float64) + (u.arrays[f"shared/{k}"].astype(np.float64) - shared[k]) * bound / ref
            np.testing.assert_allclose(o.arrays[f"shared/{k}"], want, rtol=1e-5, atol=1e-6)
    # adaptive: the quantile of the round's norms, or the fixed bound when that is smaller
    _, clipped_q, bound_q = update_clipping.clip_updates(shared, ups, 0.0, 0.5)
    assert bound_q == pytest.approx(float(np.quantile([_norm64(shared, u) for u in ups], 0.5)))
    assert [c["client"] for c in clipped_q] == ["client_3", "client_4"]
    assert update_clipping.clip_updates(shared, ups, 1.0, 0.5)[2] == 1.0
    for bad in ((-1.0, 0.0), (0.0, 1.5), (math.nan, 0.0)):
        with pytest.raises(ValueError, match="fed.clip"):
            update_clipping.clip_updates(shared, ups, *bad)


def _server(ups: list[Message], shared: dict, *overrides: str) -> tuple[dict, dict]:
    cfg = load_config(None, ["fed.strategy=fedavg", *overrides])
    head = SharedHead(16, 16, n_classes=C, d=8, heads=2)
    state, info = server_round(ServerState(0, dict(shared)), ups, strategy_from_config(cfg), cfg, head, 10)
    return state.shared, info


def test_scale_attacker_moves_a_clipped_aggregate_at_most_by_its_share_of_the_bound():
    bound = 2.0
    shared, ups = _uploads_with_updates([0.8, 1.2, 1.5, 1.0, 0.9])
    cfg = _cfg("scale", scale=1000.0)
    bc = Message("broadcast", {f"shared/{k}": v for k, v in shared.items()}, {"round": 0})
    ups[0] = maybe_attack(ups[0], bc, cfg, DATA)            # client_0 turns hostile
    silent = Message("upload", {f"shared/{k}": v.copy() for k, v in shared.items()}, ups[0].meta)  # zero update
    w = client_weights(ups, "samples", 0.1)[0]              # the server's weight of client_0 (fedavg: samples)
    attacked, info = _server(ups, shared, f"fed.clip_norm={bound}")
    baseline, _ = _server([silent] + ups[1:], shared, f"fed.clip_norm={bound}")
    unclipped, plain = _server(ups, shared)
    assert [c["client"] for c in info["clipped"]] == ["client_0"] and info["clip_bound"] == bound
    assert info["clipped"][0]["norm"] == pytest.approx(_norm64(shared, ups[0]), rel=1e-12)
    assert info["clipped"][0]["norm"] > 300 * bound              # ~1000 x 0.8
    assert "clipped" not in plain and "clip_bound" not in plain
    move = lambda a: math.sqrt(sum(float(((a[k].astype(np.float64) - baseline[k]) ** 2).sum())  # noqa: E731
                                   for k in SHARED))
    assert move(attacked) <= w * bound * (1 + 1e-4)         # the attacker's share of the bound, no more
    assert move(unclipped) > 100 * w * bound                # without clipping the attacker drags it away
    plain_update = global_update(shared, ups, weighting="samples")   # default path: the plain aggregation
    assert all(unclipped[k].tobytes() == plain_update[k].tobytes() for k in SHARED)


class _Recorder:
    """Progress hooks that keep what the round loop reports."""

    def __init__(self) -> None:
        self.metas, self.infos = [], []

    def start_round(self, r, total_rounds, n_clients): ...
    def client_done(self, name, meta): self.metas.append(dict(meta))
    def end_round(self, r, info): self.infos.append(dict(info))
    def message(self, text): ...


@pytest.mark.slow
def test_smoke_federation_with_a_signflip_attacker_completes(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))
    from transport_cases import ROUNDS, final_state, metrics_rows, session_base, small_config

    from fedmm.engines.local import run_simulation

    base = session_base(tmp_path_factory)                  # data cache shared with the transport tests
    cfg = small_config(base, "attack-signflip", "workers=1", "tracking=none", "attack.kind=signflip",
                       "attack.n=1", "fed.clip_quantile=0.5")
    rec = _Recorder()
    run = base / "runs" / "attack-signflip"
    summary = run_simulation(cfg, run, reporter=rec)
    assert set(summary["test"]) == {"full", "image_only", "text_only"}
    (attacker,) = cfg.attack.clients
    recorded = load_config(run / "config.toml")
    assert recorded.attack.clients == [attacker] and recorded.attack.kind == "signflip"
    assert {m["client"] for m in rec.metas if m.get("attacker")} == {attacker}
    assert all(m["modality"] == "multimodal" for m in rec.metas if m.get("attacker"))
    assert sum(bool(m.get("attacker")) for m in rec.metas) == ROUNDS
    rows = metrics_rows(run)
    assert sum(r["client"] == "global" for r in rows) == ROUNDS and len(rows) == ROUNDS * 5
    assert len(rec.infos) == ROUNDS and all("clip_bound" in i and len(i["clipped"]) >= 1 for i in rec.infos)
    # metrics.jsonl labels the attacker and every clipped upload (with its norm), and each round's bound
    assert {r["client"] for r in rows if r.get("attacker")} == {attacker}
    clipped_rows = [r for r in rows if "clipped_norm" in r]
    bounds = {r["round"]: r["clip_bound"] for r in rows if r["client"] == "global"}
    assert len(bounds) == ROUNDS and all(r["clipped_norm"] > bounds[r["round"]] for r in clipped_rows)
    assert len(clipped_rows) == sum(len(i["clipped"]) for i in rec.infos)
    assert all(np.isfinite(a).all() for a in final_state(run).values())
