"""The final evaluation scores identical deployed models once and gives every client what
scoring it alone would give."""
import json

import pytest

import fedmm.engines.evaluate as evaluate
import fedmm.engines.local as local
from fedmm.config import load_config
from fedmm.engines.local import run_simulation
from fedmm.federated.train import client_views


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _run_recording(monkeypatch, cache, tmp_path, strategy: str):
    calls, seen = [], {}
    real_test, real_eval = evaluate.model_test_metrics, evaluate.evaluate_federation

    def counting(*args):
        calls.append(args[0])
        return real_test(*args)

    def recording(fed, cfg, strat, state, stores, device, pool=None):
        out = real_eval(fed, cfg, strat, state, stores, device, pool)
        seen.update(fed=fed, cfg=cfg, strategy=strat, state=state, stores=stores, device=device)
        return out

    monkeypatch.setattr(evaluate, "model_test_metrics", counting)
    monkeypatch.setattr(local, "evaluate_federation", recording)
    cfg = load_config(None, [f"cache={cache}", f"out={tmp_path}", f"name={strategy}", f"fed.strategy={strategy}",
                             "fed.rounds=1", "workers=1", "tracking=none"], "smoke")
    summary = run_simulation(cfg, tmp_path / strategy)
    return summary, calls, seen


def _alone(seen, data):
    """What scoring this client's deployed model by itself gives."""
    fed, strategy = seen["fed"], seen["strategy"]
    shared = seen["state"].shared if strategy.share else None
    gv = seen["state"].gv if strategy.prototypes else None
    return evaluate.model_test_metrics(data.index, client_views(data.modality), seen["cfg"],
                                       (fed.vocab_size, list(fed.classes), fed.multilabel), shared, gv,
                                       seen["stores"][data.name], fed.test, seen["device"])


@pytest.mark.parametrize("strategy", ["fedmm", "fedavg", "local"])
def test_identical_models_scored_once_each_client_as_if_alone(monkeypatch, cache, tmp_path, strategy):
    _, calls, seen = _run_recording(monkeypatch, cache, tmp_path, strategy)
    clients = seen["fed"].clients
    if strategy == "local":       # every site keeps its own model: one test pass per client
        assert sorted(calls) == sorted(d.index for d in clients)
    else:                         # everything federated: one model, one test pass
        assert len(calls) == 1
    per_client = json.loads((tmp_path / strategy / "results_per_client.json").read_text())
    assert set(per_client) == {d.name for d in clients}
    for data in clients:
        want = _alone(seen, data)
        got = per_client[data.name]
        for view, metrics in want.items():
            assert got[view]["macro_f1"] == metrics["macro_f1"]
            assert got[view]["accuracy"] == metrics["accuracy"]
        assert set(v for v in got if v not in ("modality", "val")) == set(want)
