"""``fedmm report``: runs grouped by (folder, strategy) over seeds; table, JSON and plot; and the
markdown table of scripts/results_table.py built from the same groups."""
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedmm.cli.app import app
from fedmm.engines.compare import collect, markdown_table, recall_classes

runner = CliRunner(env={"COLUMNS": "250", "FEDMM_DEBUG": None})
CLASSES = ("no_finding", "pneumonia", "atelectasis", "cardiomegaly", "effusion", "pneumothorax", "nodule")
ROOT = Path(__file__).resolve().parents[2]


def _metrics(f1: float) -> dict:
    return {"accuracy": f1 + 0.1, "macro_auroc": 0.9, "macro_f1": f1}


def summary(strategy: str, seed: int, full: float, nodule: float, image_only: float = 0.2) -> dict:
    """A summary.json with the schema ``write_outputs`` produces (keys as in a smoke run's file)."""
    recall = {c: 0.5 for c in CLASSES} | {"nodule": nodule, "pneumothorax": 0.9}
    return {"client_types": {"image_only": _metrics(image_only), "multimodal": _metrics(full),
                             "text_only": _metrics(0.6)},
            "per_class_recall": dict(sorted(recall.items())), "rounds": 3, "rounds_detail": "metrics.jsonl",
            "seed": seed, "strategy": strategy,
            "test": {"full": _metrics(full), "image_only": _metrics(image_only), "text_only": _metrics(0.6)},
            "val": {"full": _metrics(full - 0.05)}, "wall_s": 12.5}


def write_run(folder: Path, name: str, s: dict) -> Path:
    run = folder / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(s, indent=2))
    (run / "config.toml").write_text('seed = 0\n\n[data]\ndataset = "synthcxr"\n')
    return run


@pytest.fixture
def runs(tmp_path):
    """Sweep folder ``a`` (fedmm seeds 0, 1; fedavg seed 0) and two run directories in folder ``b``."""
    write_run(tmp_path / "a", "fedmm-seed0", summary("fedmm", 0, 0.80, 0.10))
    write_run(tmp_path / "a", "fedmm-seed1", summary("fedmm", 1, 0.70, 0.30))
    write_run(tmp_path / "a", "fedavg-seed0", summary("fedavg", 0, 0.60, 0.00))
    b0 = write_run(tmp_path / "b", "fedmm-seed0", summary("fedmm", 0, 0.50, 0.20, image_only=0.1))
    b2 = write_run(tmp_path / "b", "fedmm-seed2", summary("fedmm", 2, 0.90, 0.40, image_only=0.3))
    return tmp_path, [tmp_path / "a", b0, b2]


def _plain(text: str) -> str:
    return re.sub(r"[\s\u2500-\u257f]+", " ", text)


def test_report_prints_means_and_stds_and_writes_json_and_png(runs, tmp_path):
    root, folders = runs
    out_json, out_png = tmp_path / "out" / "cmp.json", tmp_path / "out" / "cmp.png"
    res = runner.invoke(app, ["report", *map(str, folders), "--json", str(out_json), "--plot", str(out_png)])
    assert res.exit_code == 0, res.output
    text = _plain(res.output)
    # columns in order: a/fedavg (first run file of a, sorted), a/fedmm, b/fedmm
    assert "a / fedavg" in text and "a / fedmm" in text and "b / fedmm" in text
    assert "test full 0.600 ± 0.000 0.750 ± 0.050 0.700 ± 0.200" in text
    assert "clients image_only 0.200 ± 0.000 0.200 ± 0.000 0.200 ± 0.100" in text
    assert "recall nodule 0.000 ± 0.000 0.200 ± 0.100 0.300 ± 0.100" in text
    assert "recall pneumothorax 0.900 ± 0.000" in text
    assert "recall effusion" not in text                     # only the two rarest classes by default
    report = json.loads(out_json.read_text())
    assert report["recall_classes"] == ["nodule", "pneumothorax"]
    groups = {(g["folder"], g["strategy"]): g for g in report["groups"]}
    assert set(groups) == {("a", "fedmm"), ("a", "fedavg"), ("b", "fedmm")}
    b = groups[("b", "fedmm")]
    assert b["seeds"] == [0, 2] and len(b["runs"]) == 2
    assert b["test"]["full"]["macro_f1"] == pytest.approx([0.7, 0.2])
    assert b["test"]["full"]["accuracy"] == pytest.approx([0.8, 0.2])
    assert groups[("a", "fedmm")]["per_class_recall"]["nodule"] == pytest.approx([0.2, np.std([0.1, 0.3])])
    assert groups[("a", "fedmm")]["client_types"]["multimodal"]["macro_f1"] == pytest.approx([0.75, 0.05])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000


def test_recall_option_and_sweep_json_only_folders(runs, tmp_path):
    root, folders = runs
    res = runner.invoke(app, ["report", str(folders[0]), "--recall", "effusion"])
    assert res.exit_code == 0, res.output
    assert "recall effusion 0.500 ± 0.000 0.500 ± 0.000" in _plain(res.output) and "nodule" not in res.output
    bad = runner.invoke(app, ["report", str(folders[0]), "--recall", "cough"])
    assert bad.exit_code == 2 and "cough" in bad.output
    # a sweep folder whose runs are gone is read from its sweep.json (fedmm sweep's mean ± std)
    old = tmp_path / "old"
    old.mkdir()
    (old / "sweep.json").write_text(json.dumps({"local": {"test": {"full": {"macro_f1": [0.4, 0.05]}}}}))
    res = runner.invoke(app, ["report", str(old), str(folders[0])])
    assert res.exit_code == 0, res.output
    assert "old / local" in res.output and "0.400 ± 0.050" in res.output


def test_folder_without_summary_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "run-without-summary").mkdir(parents=True)
    res = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 1
    assert res.output.startswith("error:") and "no summary.json" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "error:" in res.output and "no such folder" in res.output


def test_same_run_twice_counts_once_and_labels_stay_apart(runs, tmp_path):
    root, folders = runs
    groups = collect([folders[0], folders[0] / "fedmm-seed0"])
    assert [(g["folder"], g["strategy"], g["seeds"]) for g in groups] == [("a", "fedavg", [0]), ("a", "fedmm", [0, 1])]
    write_run(tmp_path / "x" / "a", "fedmm-seed5", summary("fedmm", 5, 0.1, 0.1))   # another folder named a
    labels = {g["folder"] for g in collect([folders[0], tmp_path / "x" / "a"])}
    assert labels == {str(folders[0]), str(tmp_path / "x" / "a")}
    assert recall_classes(groups) == ["nodule", "pneumothorax"]


def test_results_table_script_is_a_wrapper_over_the_same_groups(runs, monkeypatch, capsys):
    root, folders = runs
    lines = markdown_table(collect([folders[0]]), ["nodule"])
    assert lines[2] == ("| a | fedavg | 0 | 60.0 ± 0.0 | 20.0 ± 0.0 | 60.0 ± 0.0 | 20.0 ± 0.0 | 60.0 ± 0.0 | "
                        "60.0 ± 0.0 | 0.0 ± 0.0 |")
    assert lines[3].startswith("| a | fedmm | 0,1 | 75.0 ± 5.0 |") and lines[3].endswith("| 20.0 ± 10.0 |")
    script = ROOT / "scripts" / "results_table.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(folders[0]), "--recall", "nodule"])
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == lines
