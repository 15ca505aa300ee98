"""Claims that cannot buy influence (fedmm/federated/mechanisms/claims.py): size claims, teachers and
K-Means summaries bounded on random rounds, honest rounds left as they were, and one federation under
the claims attack checked over metrics.jsonl."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmm.federated.mechanisms import claims
from fedmm.federated.mechanisms.contribution import cap_weights, client_weights, weights_and_events
from fedmm.federated.mechanisms.logit_kd import choose_teachers, select_teachers
from fedmm.federated.messages import Message
from fedmm.federated.server import _global_centers
from fedmm.ops import kmeans

C, SEEDS = 6, range(6)
CLAIM = {"n_train": 10**6, "n_val": 10**6, "val_score": 1.0, "val_classes": C}   # attack.kind = claims


def _meta(name, rng, **over) -> dict:
    """Honest-looking claims of a client of 80-239 training rows (sizes within 3x of each other)."""
    n = int(rng.integers(80, 240))
    meta = {"client": name, "n_train": n, "n_val": max(1, int(0.18 * n)), "val_score": float(rng.uniform(0.05, 0.8)),
            "val_classes": int(rng.integers(2, C + 1)), "modality": "multimodal"}
    return {**meta, **over}


def _round(seed: int) -> tuple[list[Message], list[str]]:
    """A random round: 5-12 honest clients, 1 .. (honest - 1) claims attackers; returns (uploads, attackers)."""
    rng = np.random.default_rng(seed)
    n_honest = int(rng.integers(5, 13))
    n_att = int(rng.integers(1, n_honest))                       # fewer than half the round
    names = [f"c{i}" for i in range(n_honest + n_att)]
    attackers = list(rng.choice(names, n_att, replace=False))
    ups = [Message("upload", {}, _meta(n, rng, **(CLAIM if n in attackers else {}))) for n in names]
    return ups, attackers


def _old_weights(ups: list[Message], weighting: str, tau: float = 0.1) -> np.ndarray:
    """The weighting before the claims bounds (reference for honest rounds)."""
    n = np.array([float(u.meta["n_train"]) for u in ups])
    n = np.minimum(n, 4.0 * np.median(n))
    if weighting == "samples":
        return cap_weights(n, 3.0)
    s = np.array([u.meta["val_score"] for u in ups])
    m = np.array([u.meta["n_val"] * (u.meta["val_classes"] - 1) / (C - 1) for u in ups])
    s = (m * s + 20.0 * np.median(s)) / (m + 20.0)
    return cap_weights(n * np.exp(np.clip((s - np.median(s)) / tau, -1, 1)), 3.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighting", ["performance", "samples"])
def test_claims_attackers_get_at_most_twice_the_largest_honest_weight(seed, weighting):
    ups, attackers = _round(seed)
    is_att = np.array([u.meta["client"] in attackers for u in ups])
    naive = _old_weights(ups, weighting)                         # before: the claims outweighed everyone
    assert naive[is_att].max() > naive[~is_att].max() * 1.05
    w, events = weights_and_events(ups, weighting, 0.1, C)
    assert w.sum() == pytest.approx(1.0) and np.all(w > 0)
    assert w[is_att].max() <= 2 * w[~is_att].max()              # the target ...
    assert w[is_att].max() <= w[~is_att].max() * (1 + 1e-9)     # ... and what the bound gives: the heaviest honest
    np.testing.assert_array_equal(w, client_weights(ups, weighting, 0.1, C))
    flagged = {e["client"] for e in events if e["what"] == "weight" and "n_train claim" in e["reason"]}
    assert flagged == set(attackers)
    assert all(set(e) == {"client", "what", "reason"} for e in events)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighting", ["performance", "samples", "uniform"])
def test_honest_rounds_keep_their_weights(seed, weighting):
    rng = np.random.default_rng(100 + seed)
    ups = [Message("upload", {}, _meta(f"c{i}", rng)) for i in range(int(rng.integers(3, 15)))]
    w, events = weights_and_events(ups, weighting, 0.1, C)
    want = np.full(len(ups), 1 / len(ups)) if weighting == "uniform" else _old_weights(ups, weighting)
    np.testing.assert_allclose(w, want, rtol=1e-12)
    assert all("mean weight" in e["reason"] for e in events)    # only the (old) 3x-mean cap may bite
    assert not claims.check_sizes(ups).untrusted


@pytest.mark.parametrize("seed", SEEDS)
def test_size_claims_are_bounded_by_the_round_median(seed):
    rng = np.random.default_rng(200 + seed)
    n = rng.integers(1, 10**6, int(rng.integers(3, 20))).astype(float)
    n_val = rng.integers(0, 10**5, len(n)).astype(float)
    ups = [Message("upload", {}, {"client": f"c{i}", "n_train": int(a), "n_val": int(b)})
           for i, (a, b) in enumerate(zip(n, n_val))]
    out = claims.check_sizes(ups)
    cap = 4 * np.median(n)
    np.testing.assert_allclose(out.n_train, np.minimum(n, cap))
    assert np.all(out.n_val <= np.minimum(4 * max(np.median(n_val), 1), out.n_train) + 1e-9)
    np.testing.assert_array_equal(out.n_val == n_val, n_val <= np.minimum(4 * max(np.median(n_val), 1), out.n_train))
    assert set(out.untrusted) == {f"c{i}" for i in np.flatnonzero(n > cap)}


def _logit_round(seed: int, n_cands: int, n_bad: int, rows: int = 24):
    """Honest clients: shared logits [rows, C] + noise; the first ``n_bad`` confident on one wrong class."""
    rng = np.random.default_rng(300 + seed)
    base = rng.normal(0, 1.5, (rows, C))
    ups = []
    for i in range(n_cands):
        logits = base + rng.normal(0, 0.5, base.shape)
        if i < n_bad:                                            # attack.kind = logits (margin 10)
            logits = np.zeros_like(base)
            logits[:, int(np.argmin(base.sum(0)))] = 10.0
        meta = {"client": f"c{i}", "val_score": float(rng.uniform(0.1, 0.9)), "n_train": 100,
                "modality": "multimodal"}
        ups.append(Message("upload", {"public/full_logits": logits.astype(np.float32)}, meta))
    return ups


def _median_rule(ups):
    """Teachers of the view before the bounds: scores at or above the median."""
    s = np.array([u.meta["val_score"] for u in ups])
    return [u.meta["client"] for u, sk in zip(ups, s) if sk >= np.median(s)]


@pytest.mark.parametrize("seed", SEEDS)
def test_disagreeing_public_logits_and_untrusted_claims_make_no_teacher(seed):
    rng = np.random.default_rng(seed)
    n_cands = int(rng.integers(5, 12))
    n_bad = int(rng.integers(1, (n_cands + 1) // 2))              # fewer than half of the candidates
    ups = _logit_round(seed, n_cands, n_bad)
    for u in ups[:n_bad]:
        u.meta["val_score"] = 1.0                                # and the best score of the round
    bad = {f"c{i}" for i in range(n_bad)}
    liar = f"c{n_cands - 1}"                                     # honest logits, implausible size claim
    ups[-1].meta["val_score"] = 1.0
    teachers, students, probs, events = choose_teachers(ups, -1.0, 2.0, {liar: "n_train claim too large"})
    assert teachers["full"] and not (set(teachers["full"]) & (bad | {liar}))
    assert bad | {liar} <= set(students)
    assert {e["client"] for e in events if e["what"] == "teacher"} == bad | {liar}
    assert probs["full"].shape == (24, C) and np.allclose(probs["full"].sum(1), 1, atol=1e-5)
    # without the bounds, the confident liars would have been teachers
    assert bad | {liar} <= set(_median_rule(ups))


@pytest.mark.parametrize("seed", SEEDS)
def test_honest_teachers_and_soft_labels_are_unchanged(seed):
    n_cands = int(np.random.default_rng(seed).integers(3, 12))
    ups = _logit_round(seed, n_cands, 0)
    teachers, students, probs, events = choose_teachers(ups, -1.0, 2.0)
    assert events == [] and teachers["full"] == _median_rule(ups)
    assert sorted(students) == sorted(set(u.meta["client"] for u in ups) - set(teachers["full"]))
    chosen = [u for u in ups if u.meta["client"] in teachers["full"]]
    w = np.array([u.meta["val_score"] for u in chosen])
    want = sum(wk * torch.softmax(torch.from_numpy(u.arrays["public/full_logits"]) / 2.0, -1).numpy()
               for wk, u in zip(w, chosen)) / w.sum()
    np.testing.assert_allclose(probs["full"], want, rtol=1e-6)
    assert select_teachers(ups, -1.0, 2.0)[0] == teachers


def _summary_round(seed: int, n_bad: int, d: int = 8):
    """Honest summaries (3 centroids each) near 4 shared cluster means of norm 10; the first ``n_bad`` of
    >= 2 n_bad + 2 clients x 100 (attack.kind = centroids). Returns (uploads, allowed counts per client)."""
    rng = np.random.default_rng(400 + seed)
    means = rng.normal(0, 1, (4, d))
    means = 10 * means / np.linalg.norm(means, axis=1, keepdims=True)
    ups, allowed = [], {}
    for i in range(int(rng.integers(2 * n_bad + 2, 10))):
        k = 3
        cents = means[rng.integers(0, 4, k)] + rng.normal(0, 0.5, (k, d))
        counts = rng.integers(5, 30, k).astype(np.float64)
        hist = rng.multinomial(1, np.ones(C) / C, (k, int(counts.min()))).sum(1).astype(np.float64)
        if i < n_bad:
            cents, counts, hist = cents * 100, counts * 100, hist * 100
        allowed[f"c{i}"] = 30.0 * k
        arrays = {"summary/image_centroids": cents.astype(np.float32), "summary/image_counts":
                  counts.astype(np.float32), "summary/image_hist": hist.astype(np.float32)}
        ups.append(Message("upload", arrays, {"client": f"c{i}"}))
    return ups, allowed


@pytest.mark.parametrize("seed", SEEDS)
def test_poisoned_summaries_are_capped_and_dropped(seed):
    n_bad = int(np.random.default_rng(seed).integers(1, 3))
    ups, allowed = _summary_round(seed, n_bad)
    x, counts, hists, events = claims.bounded_summaries(ups, "image", allowed)
    honest = ups[n_bad:]
    np.testing.assert_array_equal(x, np.concatenate([u.arrays["summary/image_centroids"] for u in honest]))
    np.testing.assert_array_equal(counts, np.concatenate([u.arrays["summary/image_counts"] for u in honest]))
    assert len(hists) == len(x)
    assert {(e["client"], e["what"]) for e in events} == {(f"c{i}", "centroids") for i in range(n_bad)}
    for word in ("dropped", "scaled"):                          # one count cap and one norm drop per attacker
        assert sum(word in e["reason"] for e in events) == n_bad
    found: list = []
    centers, _, _ = _global_centers(ups, "image", 4, 0, C, allowed, found)
    assert found == events and np.linalg.norm(centers, axis=1).max() < 20
    plain, _ = kmeans(np.concatenate([u.arrays["summary/image_centroids"] for u in ups]), 4, seed=0,
                      weights=np.concatenate([u.arrays["summary/image_counts"] for u in ups]))
    assert np.linalg.norm(plain, axis=1).max() > 100             # without the bounds the poison owns a center


@pytest.mark.parametrize("seed", SEEDS)
def test_honest_summaries_pass_unchanged(seed):
    ups, allowed = _summary_round(seed, 0)
    x, counts, hists, events = claims.bounded_summaries(ups, "image", allowed)
    assert events == []
    for got, key in ((x, "centroids"), (counts, "counts"), (hists, "hist")):
        want = np.concatenate([u.arrays[f"summary/image_{key}"] for u in ups])
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.slow
def test_claims_attack_buys_no_weight_and_no_teacher_in_any_round(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))
    from transport_cases import metrics_rows, session_base, small_config

    from fedmm.engines.local import run_simulation

    base = session_base(tmp_path_factory)
    cfg = small_config(base, "attack-claims", "workers=1", "tracking=none", "data.n_clients=8", "fed.kd=true",
                       "attack.kind=claims", "attack.n=3")
    run_simulation(cfg, base / "runs" / "attack-claims")
    rows = metrics_rows(base / "runs" / "attack-claims")
    attackers = set(cfg.attack.clients)
    assert len(attackers) == 3
    rounds = sorted({r["round"] for r in rows})
    assert rounds == list(range(cfg.fed.rounds))
    for r in rounds:
        clients = [x for x in rows if x["round"] == r and x["client"] != "global"]
        (glob,) = [x for x in rows if x["round"] == r and x["client"] == "global"]
        assert {x["client"] for x in clients if x.get("attacker")} == attackers
        assert all(x["n_train"] == 10**6 for x in clients if x.get("attacker"))   # the claim did arrive
        att = max(x["weight"] for x in clients if x["client"] in attackers)
        honest = max(x["weight"] for x in clients if x["client"] not in attackers)
        assert att <= 2 * honest
        assert glob["teachers"] and not attackers & set(glob["teachers"])
        logged = {(e["client"], e["what"]) for e in glob["robust"]}
        assert {(a, w) for a in attackers for w in ("weight", "teacher")} <= logged
        assert {e["client"] for e in glob["robust"]} == attackers              # no honest client touched
