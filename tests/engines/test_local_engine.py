"""End-to-end: a smoke federation learns, and a run killed mid-round resumes to the same result."""
import json

import numpy as np
import pytest
from transport_cases import (Interrupt, KillMidRound, final_state, max_abs_diff, metrics_rows, reference_run,
                             session_base, small_config)

from fedmm.config import load_config
from fedmm.engines.local import resolve_transport, run_simulation
from fedmm.engines.prepare import prepare_federation


def _cfg(cache, out, name, *extra):
    return load_config(None, [f"cache={cache}", f"out={out}", f"name={name}", *extra], "smoke")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_smoke_federation_learns_and_writes_outputs(cache, tmp_path):
    cfg = _cfg(cache, tmp_path, "fedmm")
    summary = run_simulation(cfg, tmp_path / "fedmm")
    run = tmp_path / "fedmm"
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    assert set(summary["test"]) == {"full", "image_only", "text_only"}
    assert {"image_only", "text_only", "multimodal"} <= set(summary["client_types"])
    # the best constant predictor (always the majority class) scores macro-F1 = F1(majority) / C
    test_labels = prepare_federation(cfg).test.labels.numpy()
    p = np.bincount(test_labels).max() / len(test_labels)
    constant_f1 = 2 * p / (1 + p) / len(summary["per_class_recall"])
    assert summary["test"]["full"]["macro_f1"] > 2 * constant_f1
    assert summary["test"]["full"]["macro_auroc"] > 0.75  # chance is 0.5
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["round"] for r in rows}) == list(range(cfg.fed.rounds))
    assert sum(r["client"] == "global" for r in rows) == cfg.fed.rounds
    assert (run / "config.toml").exists() and (run / "metrics.png").exists()
    assert len(list((run / "checkpoints").glob("server_round_*.safetensors"))) == cfg.fed.rounds


def test_resume_after_a_crash_mid_round_matches_uninterrupted_run(cache, tmp_path):
    full = run_simulation(_cfg(cache, tmp_path, "a", "fed.rounds=2"), tmp_path / "a")
    with pytest.raises(Interrupt):
        run_simulation(_cfg(cache, tmp_path, "b", "fed.rounds=2"), tmp_path / "b", reporter=KillMidRound(1, 3))
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = run_simulation(_cfg(cache, tmp_path, "b", "fed.rounds=2"), tmp_path / "b", resume=True)
    for section in ("test", "client_types"):
        assert resumed[section] == full[section]
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "local", "centralized"])
def test_baselines_run(cache, tmp_path, strategy):
    summary = run_simulation(_cfg(cache, tmp_path, strategy, f"fed.strategy={strategy}", "fed.rounds=1"),
                             tmp_path / strategy)
    assert summary["strategy"] == strategy
    assert np.isfinite(summary["test"]["full"]["macro_f1"])


def test_worker_processes_give_exactly_the_one_process_federation(tmp_path_factory):
    """Clients in two worker processes (the reference) = clients one after another here."""
    ref = reference_run(tmp_path_factory)
    base = session_base(tmp_path_factory)
    run_dir = base / "runs" / "one-process"
    summary = run_simulation(small_config(base, "one-process", "workers=1"), run_dir)
    diff = max_abs_diff(final_state(ref), final_state(run_dir))
    assert diff == 0.0, f"worker processes change the global state by {diff}"
    assert metrics_rows(run_dir) == metrics_rows(ref)
    assert summary["test"] == json.loads((ref / "summary.json").read_text())["test"]
    assert not (ref / "exchange").exists()  # the uploads are removed after the last round


def test_resolve_transport_keeps_a_resumed_runs_transport(tmp_path):
    """A resumed run keeps its recorded transport; a different request, an unknown name and the
    centralized baseline over a network transport are refused with the reason."""
    assert resolve_transport(None, tmp_path, False, "fedmm") == "local"
    (tmp_path / "transport.json").write_text(json.dumps({"transport": "files"}))
    assert resolve_transport(None, tmp_path, True, "fedmm") == "files"
    assert resolve_transport("files", tmp_path, True, "fedmm") == "files"
    assert resolve_transport("local", tmp_path, False, "fedmm") == "local"  # a new run ignores the marker
    with pytest.raises(ValueError, match="ran over the 'files' transport"):
        resolve_transport("flower", tmp_path, True, "fedmm")
    with pytest.raises(ValueError, match="unknown transport 'grpc'"):
        resolve_transport("grpc", tmp_path, False, "fedmm")
    with pytest.raises(ValueError, match="centralized baseline"):
        resolve_transport("files", tmp_path, False, "centralized")


def test_batchnorm_statistics_pass_after_the_last_round(cache, tmp_path):
    """fed.bn=recompute: after the last round the global running statistics are replaced by the
    clients' pooled statistics of the global weights; the weights themselves are untouched."""
    from fedmm.federated.params import param_group
    from fedmm.io import load_arrays, read_json

    run_simulation(_cfg(cache, tmp_path, "bn", "fed.rounds=1", "fed.bn=recompute", "workers=1"), tmp_path / "bn")
    run_simulation(_cfg(cache, tmp_path, "plain", "fed.rounds=1", "fed.bn=shared", "workers=1"), tmp_path / "plain")
    assert read_json(tmp_path / "bn" / "checkpoints" / "latest.json")["bn_stats"] is True
    a = load_arrays(tmp_path / "bn" / "checkpoints" / "server_round_0001.safetensors")
    b = load_arrays(tmp_path / "plain" / "checkpoints" / "server_round_0001.safetensors")
    assert set(a) == set(b)
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert stats and all(param_group(k[len("shared/"):]) == "image_encoder" for k in stats)
    assert all(not np.array_equal(a[k], b[k]) for k in stats)
    assert all(np.array_equal(a[k], b[k]) for k in a if k not in stats)


def test_one_modality_hidden_everywhere_runs(cache, tmp_path):
    """With the reports hidden (complementarity study) the text-only sites hold no rows: they
    upload no summaries, and the federation still trains and evaluates."""
    cfg = _cfg(cache, tmp_path, "img", "fed.rounds=1", "data.modalities=image")
    summary = run_simulation(cfg, tmp_path / "img")
    assert np.isfinite(summary["test"]["image_only"]["macro_f1"])
    assert "text_only" not in summary["client_types"] and "text_only" not in summary["test"]
    per_client = json.loads((tmp_path / "img" / "results_per_client.json").read_text())
    empty = [c for c, m in per_client.items() if m["modality"] == "none"]
    assert len(empty) == cfg.data.n_text_only     # the report-only sites, left with no rows
