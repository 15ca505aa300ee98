"""TensorBoard tracking: event files hold exactly metrics.jsonl's rounds and summary.json's test
metrics, once per step (also after a resume); ``tracking = none`` writes none and changes nothing."""
import json
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transport_cases import Interrupt, KillMidRound, metrics_rows, reference_run, session_base, small_config
from typer.testing import CliRunner

from fedmm.cli.app import app
from fedmm.config import load_config
from fedmm.engines.local import run_simulation
from fedmm.engines.loop import NullReporter
from fedmm.engines.tracking import TB_DIR, Tracker

GLOBAL = ("val_macro_f1_mean", "effective_clients", "upload_bytes_mean", "n_uploads", "wall_s")


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``log_dir``'s event files: ``{tag: [(step, value), ...]}`` in file order."""
    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def expected_from_metrics(run_dir) -> dict[str, dict[int, float]]:
    """What the event files must hold for each round, computed from metrics.jsonl directly."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    want: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["client"] == "global":
            for k in GLOBAL:
                want.setdefault(f"global/{k}", {})[row["round"]] = row[k]
    for kind in ("image_only", "text_only", "multimodal"):
        for key in ("val_macro_f1", "train_loss"):
            for r in sorted({row["round"] for row in rows}):
                vals = [x[key] for x in rows if x["client"] != "global" and x["round"] == r and x["modality"] == kind]
                want.setdefault(f"clients/{kind}/{key}", {})[r] = float(np.mean(vals))
    return want


def assert_matches_metrics(run_dir, rounds: int) -> dict:
    got = read_scalars(run_dir / TB_DIR)
    for tag, per_round in expected_from_metrics(run_dir).items():
        steps = [s for s, _ in got[tag]]
        assert steps == list(range(rounds)), (tag, steps)          # every round once, in order
        for step, value in got[tag]:
            assert value == pytest.approx(per_round[step], rel=1e-6, abs=1e-9), (tag, step)
    return got


def assert_matches_summary(run_dir, got: dict, rounds: int) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    for scenario in ("full", "image_only", "text_only"):
        for metric in ("macro_f1", "accuracy", "macro_auroc"):
            assert got[f"test/{scenario}/{metric}"] == [(rounds - 1, pytest.approx(summary["test"][scenario][metric]))]
    for kind, m in summary["client_types"].items():
        assert got[f"test_client_type/{kind}/macro_f1"] == [(rounds - 1, pytest.approx(m["macro_f1"]))]
    for c, v in summary["per_class_recall"].items():
        assert got[f"test_recall/{c}"] == [(rounds - 1, pytest.approx(v))]


def test_event_files_match_metrics_jsonl_and_summary(tmp_path_factory):
    run_dir = reference_run(tmp_path_factory)      # default config: tracking = tensorboard
    got = assert_matches_metrics(run_dir, 2)
    assert_matches_summary(run_dir, got, 2)
    ea = EventAccumulator(str(run_dir / TB_DIR))
    ea.Reload()
    assert "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")


def test_tracking_none_writes_no_event_files_and_changes_no_result(tmp_path_factory):
    base = session_base(tmp_path_factory)
    ref = reference_run(tmp_path_factory)
    run_dir = base / "runs" / "untracked"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    summary = run_simulation(small_config(base, "untracked", "workers=2", "tracking=none"), run_dir)
    assert not (run_dir / TB_DIR).exists()
    assert metrics_rows(run_dir) == metrics_rows(ref)
    ref_summary = json.loads((ref / "summary.json").read_text())
    for section in ("test", "client_types", "per_class_recall"):
        assert summary[section] == ref_summary[section]


def test_resumed_run_appends_its_steps_without_duplicates(tmp_path_factory):
    base = session_base(tmp_path_factory)
    run_dir = base / "runs" / "tracked-crash"
    with pytest.raises(Interrupt):
        run_simulation(small_config(base, "tracked-crash", "workers=1"), run_dir, reporter=KillMidRound(1, 2))
    before = read_scalars(run_dir / TB_DIR)
    assert before["global/val_macro_f1_mean"] and {s for s, _ in before["global/val_macro_f1_mean"]} == {0}
    run_simulation(small_config(base, "tracked-crash", "workers=1"), run_dir, resume=True)
    assert len(list((run_dir / TB_DIR).glob("events.out.tfevents.*"))) == 2   # appended in a new file
    got = assert_matches_metrics(run_dir, 2)
    assert_matches_summary(run_dir, got, 2)


# --- the Tracker on hand-written metrics.jsonl rows (no training) ---

def _rows(r: int) -> list[dict]:
    return [{"round": r, "client": "c0", "modality": "image_only", "val_macro_f1": 0.1 + r, "train_loss": 2.0 - r},
            {"round": r, "client": "c1", "modality": "multimodal", "val_macro_f1": 0.5 + r, "train_loss": 1.0},
            {"round": r, "client": "c2", "modality": "multimodal", "val_macro_f1": 0.7 + r, "train_loss": 3.0},
            {"round": r, "client": "global", "val_macro_f1_mean": 0.3 + r, "n_uploads": 3,
             "effective_clients": None, "upload_bytes_mean": 1000.0 * (r + 1), "wall_s": 1.5 * (r + 1)}]


def _append(run_dir, r: int) -> None:
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in _rows(r))


SUMMARY = {"strategy": "fedmm", "seed": 0, "rounds": 3, "per_class_recall": {"a": 0.25, "b": 0.75},
           "test": {"full": {"accuracy": 0.5, "macro_f1": 0.4, "macro_auroc": 0.8}}, "client_types": {}}


class Recorder(NullReporter):
    def __init__(self):
        self.ended, self.messages = [], []

    def end_round(self, r, info):
        self.ended.append(r)

    def message(self, text):
        self.messages.append(text)


def test_tracker_logs_means_per_client_type_and_never_a_step_twice(tmp_path):
    cfg = load_config(None, [], "smoke")
    inner = Recorder()
    tracker = Tracker(cfg, tmp_path, inner)
    for r in (0, 1):
        _append(tmp_path, r)
        tracker.end_round(r, {})
    assert inner.ended == [0, 1]
    got = read_scalars(tmp_path / TB_DIR)
    assert got["clients/multimodal/val_macro_f1"] == [(0, pytest.approx(0.6)), (1, pytest.approx(1.6))]
    assert got["clients/image_only/train_loss"] == [(0, pytest.approx(2.0)), (1, pytest.approx(1.0))]
    assert got["global/upload_bytes_mean"] == [(0, 1000.0), (1, 2000.0)]
    assert "global/effective_clients" not in got                   # None in metrics.jsonl: not logged
    # a new process resumes: round 2 is appended, rounds 0-1 are not written again
    resumed = Tracker(cfg, tmp_path, Recorder(), resume=True)
    _append(tmp_path, 2)
    resumed.end_round(2, {})
    assert resumed.finish(SUMMARY) is SUMMARY
    # resuming the finished run again (evaluation only) adds nothing
    Tracker(cfg, tmp_path, Recorder(), resume=True).finish(SUMMARY)
    got = read_scalars(tmp_path / TB_DIR)
    assert [s for s, _ in got["global/val_macro_f1_mean"]] == [0, 1, 2]
    assert got["test/full/macro_f1"] == [(2, pytest.approx(0.4))]
    assert got["test_recall/b"] == [(2, 0.75)]
    # a fresh (not resumed) run in the same directory starts the event files anew
    (tmp_path / "metrics.jsonl").unlink()
    _append(tmp_path, 0)
    Tracker(cfg, tmp_path, Recorder()).end_round(0, {})
    assert [s for s, _ in read_scalars(tmp_path / TB_DIR)["global/val_macro_f1_mean"]] == [0]


def test_tracking_none_and_failures_leave_the_run_alone(tmp_path):
    none = Tracker(load_config(None, ["tracking=none"], "smoke"), tmp_path, Recorder())
    _append(tmp_path, 0)
    none.end_round(0, {})
    none.finish(SUMMARY)
    assert not (tmp_path / TB_DIR).exists() and none.inner.ended == [0]
    (tmp_path / TB_DIR).write_text("a file where the folder would go")
    inner = Recorder()
    broken = Tracker(load_config(None, [], "smoke"), tmp_path, inner)
    broken.end_round(0, {})                                         # no exception: reported, tracking off
    broken.finish(SUMMARY)
    assert inner.ended == [0] and len(inner.messages) == 1 and "tracking turned off" in inner.messages[0]
    with pytest.raises(ValueError, match="tracking"):
        Tracker(load_config(None, ["tracking=mlflow"], "smoke"), tmp_path, Recorder())


def test_unknown_tracking_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(app, ["run", "-c", "tracking=mlflow", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 2 and "tracking" in res.output and "tensorboard" in res.output
    assert not any(tmp_path.iterdir())
