"""Multi-label end to end: a synthcxr-derived findings table (several findings per study),
imported with ``fedmm data import csv --finding-cols``, trained with ``fedmm run`` (fedmm
strategy, default mechanisms, smoke preset, 2 rounds, 4 clients), scored by ``fedmm predict``.

Checks: summary.json holds macro_auroc and per_class_auroc per test scenario and the model
learned something (AUROC well above chance on the views with the report); predict writes
independent sigmoid probabilities (rows do not sum to 1) and a multi-hot ``predicted_label``
(the classes at p >= 0.5, ``|``-joined). Also: the importer's error for a non-0/1 label cell,
and the server calibration's multi-label target (positive rates, binary cross-entropy).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedmm.cli.app import app
from fedmm.data.manifest import LABEL_SEP, load_manifest
from fedmm.data.synth import SynthConfig, generate_synthcxr
from fedmm.data.synth_findings import FINDINGS, write_findings_table
from fedmm.engines.evaluate import summarize_seeds
from fedmm.federated.server import calibrate
from fedmm.io import read_json
from fedmm.models.head import SharedHead
from fedmm.models.surrogate import GlobalVectors

runner = CliRunner(env={"FEDMM_DEBUG": None})
CLASSES = ["no_finding", "lung_opacity", "pneumonia", "atelectasis", "cardiomegaly", "pleural_effusion",
           "pleural_abnormality", "lung_lesion"]   # snake_case of FINDINGS, in order


def _ok(*args) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return res.output


def _import_args(table: Path, out: Path, synth: Path) -> list:
    return ["data", "import", "csv", table, "--out", out, "--image-root", synth, "--text-col", "text",
            "--finding-cols", ",".join(FINDINGS), "--split-col", "split", "--patient-col", "patient_id",
            "--site-col", "site"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A multi-label dataset folder (manifest with a ``labels`` column) made from synthcxr."""
    base = tmp_path_factory.mktemp("multilabel")
    synth = generate_synthcxr(base / "synth", SynthConfig(n_samples=900, seed=0))
    table = write_findings_table(synth, base / "findings.csv")
    _ok(*_import_args(table, base / "ml", synth))
    return base / "ml"


@pytest.fixture(scope="module")
def run_dir(dataset) -> Path:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = dataset.parent / "runs"
    _ok("run", "--preset", "smoke", "--rounds", "2", "--device", "cpu", "--out", out, "--name", "ml", "--quiet",
        "-c", f"data.dataset={dataset}", "-c", f"cache={dataset.parent / 'cache'}", "-c", "data.n_clients=4",
        "-c", "threads=1", "-c", "workers=1", "-c", "tracking=none")
    return out / "ml"


def test_fixture_has_several_findings_per_study(dataset):
    data = load_manifest(dataset, verify_images=False)
    assert data.multilabel and list(data.classes) == sorted(CLASSES)
    n_labels = np.array([len(r.labels) for r in data.records])
    assert n_labels.min() >= 1 and (n_labels >= 2).mean() > 0.3


def test_summary_has_per_class_and_macro_auroc(run_dir):
    summary = read_json(run_dir / "summary.json")
    assert set(summary["test"]) == {"full", "image_only", "text_only"}
    for scenario, m in summary["test"].items():
        per = m["per_class_auroc"]
        assert set(per) == set(CLASSES), scenario   # every class has positives and negatives in the test split
        assert all(0.0 <= a <= 1.0 for a in per.values())
        # all classes present for every client: the mean over clients of the macro = the macro of the means
        assert m["macro_auroc"] == pytest.approx(np.mean(list(per.values())), abs=1e-9)
    # learned something after 2 smoke rounds (seed 0: macro 0.64 full, 0.62 text_only, no_finding 0.86 / 0.95);
    # a broken pipeline (labels misaligned, wrong loss) leaves every class near 0.5
    test = summary["test"]
    assert np.mean([test["full"]["macro_auroc"], test["text_only"]["macro_auroc"]]) > 0.58
    assert test["text_only"]["per_class_auroc"]["no_finding"] > 0.8   # the reports say "normal" plainly
    assert test["full"]["per_class_auroc"]["no_finding"] > 0.75


def test_predict_gives_sigmoid_probabilities_and_multi_hot_labels(run_dir, dataset, tmp_path):
    per_client = read_json(run_dir / "results_per_client.json")
    client = next(c for c, m in sorted(per_client.items()) if m["modality"] == "multimodal")
    out = tmp_path / "pred.csv"
    _ok("predict", run_dir, "--client", client, "--manifest", dataset, "--out", out, "--device", "cpu")
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 100
    probs = np.array([[float(r[f"p_{c}"]) for c in sorted(CLASSES)] for r in rows])   # [N, C]
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    assert np.abs(probs.sum(1) - 1.0).max() > 0.05            # independent sigmoids, not a softmax
    for r, p in zip(rows, probs):
        want = {c for c, q in zip(sorted(CLASSES), p) if q >= 0.5}
        assert set(filter(None, r["predicted_label"].split(LABEL_SEP))) == want
    assert any(LABEL_SEP in r["label"] for r in rows)           # the truth column is multi-label too
    # the json output says so
    js = tmp_path / "pred.json"
    _ok("predict", run_dir, "--client", client, "--manifest", dataset, "--out", js, "--device", "cpu")
    assert read_json(js)["multilabel"] is True


def test_bad_finding_value_is_reported(tmp_path):
    synth = generate_synthcxr(tmp_path / "synth", SynthConfig(n_samples=40, seed=1))
    table = write_findings_table(synth, tmp_path / "findings.csv")
    lines = table.read_text().splitlines()
    lines[1] = lines[1][: lines[1].rfind(",")] + ",yes"       # a label cell that is not 1 / 0 / -1 / empty
    table.write_text("\n".join(lines) + "\n")
    _ok(*_import_args(table, tmp_path / "ml", synth))
    issues = (tmp_path / "ml" / "import_issues.csv").read_text()
    assert "bad label value" in issues and "'yes' is not 1, 0, -1 or empty" in issues


def _gv(rng, hist_img, hist_txt, d: int = 8) -> GlobalVectors:
    k = len(hist_img)
    return GlobalVectors(rng.standard_normal((k, d)).astype(np.float32), rng.standard_normal((k, d)).astype(np.float32),
                         np.arange(k), np.arange(k), hist_img, hist_txt, np.zeros((k, 2 * d), np.float32))


def test_server_calibration_fits_positive_rates_with_sigmoids():
    """Multi-label calibration targets each pair's per-class positive rate (hist / count) with BCE:
    sigmoid(classifier(prototype)) moves to those rates, which a softmax over classes could not give
    (the rates of a row sum to more than 1)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    counts = np.array([10.0, 20.0, 10.0], np.float32)
    hist = np.array([[10, 10, 0], [20, 0, 20], [0, 5, 10]], np.float32)   # [K, C]; rows sum > count
    rates = hist / counts[:, None]                                        # [K, C] in [0, 1]
    head = SharedHead(8, 8, n_classes=3, d=8, heads=2)
    protos = calibrate(head, _gv(rng, hist, hist.copy()), steps=400, lr=1e-2, balanced=True,
                       counts=(counts, counts))
    with torch.no_grad():
        p = torch.sigmoid(head.classifier(torch.from_numpy(protos))).numpy()   # [K, C]
    np.testing.assert_allclose(p, rates, atol=0.1)


def test_seed_summary_averages_per_class_auroc_per_class():
    runs = [{"test": {"full": {"macro_auroc": 0.6, "per_class_auroc": {"a": 0.5, "b": 0.7}}}},
            {"test": {"full": {"macro_auroc": 0.8, "per_class_auroc": {"a": 0.7}}}}]
    full = summarize_seeds(runs)["test"]["full"]
    np.testing.assert_allclose(full["macro_auroc"], [0.7, 0.1])
    np.testing.assert_allclose(full["per_class_auroc"]["a"], [0.6, 0.1])
    assert full["per_class_auroc"]["b"] == [0.7, 0.0]
