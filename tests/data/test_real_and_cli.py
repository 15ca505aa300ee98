"""The real covid-cxr-notes set loads and partitions by site; the `data` CLI commands work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmm.cli.data_cmd import app
from fedmm.data.manifest import load_manifest
from fedmm.data.partition import PartitionConfig, partition_dataset

from .helpers import REAL_SET, make_labelled_set

needs_real = pytest.mark.skipif(not (REAL_SET / "manifest.csv").is_file(), reason="real covid set not present")


@needs_real
def test_real_set_loads() -> None:
    data = load_manifest(REAL_SET)
    assert len(data.records) == 275 and data.issues == []
    assert data.classes == ["covid19", "no_finding", "other_pneumonia"]
    assert sum(r.text is None for r in data.records) == 85
    assert all(r.image is not None for r in data.records)
    assert len({r.patient_id for r in data.records}) < 275     # several images per patient


@needs_real
def test_real_set_site_partition(tmp_path: Path) -> None:
    cfg = PartitionConfig(mode="site", public_size=20, min_train_per_client=5, seed=0)
    summary = partition_dataset(REAL_SET, tmp_path / "clients", cfg)
    sites = [c["sites"] for c in summary["clients"]]
    named = [s[0] for s in sites if len(s) == 1]
    assert named == sorted(named) and {"Germany", "Spain"} <= set(named)
    assert all(c["n_train"] >= 5 for c in summary["clients"])
    patients: dict[str, str] = {}
    for c in summary["clients"]:
        for split in ("train", "val"):
            for r in load_manifest(tmp_path / "clients" / c["name"] / split).records:
                assert patients.setdefault(r.patient_id, c["name"]) == c["name"]
                assert len(c["sites"]) > 1 or r.site == c["sites"][0] or (r.site is None and c["sites"] == ["unknown"])
    test = load_manifest(tmp_path / "clients" / "test").records
    assert len(test) == summary["n_test"] > 0 and all(r.text and r.image for r in test)
    assert not {r.patient_id for r in test} & set(patients)


def test_cli_synth_and_partition(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n-samples", "80", "--image-size", "32",
                              "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "pneumothorax" in res.output and (tmp_path / "s" / "manifest.csv").is_file()
    res = runner.invoke(app, ["partition", str(tmp_path / "s"), "--out", str(tmp_path / "c"), "--clients", "4",
                              "--image-only", "1", "--text-only", "1", "--public-size", "8", "--min-train", "5",
                              "--alpha", "1.0"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "c" / "partition.json").read_text())
    assert [c["modality"] for c in summary["clients"]] == ["image_only", "text_only", "multimodal", "multimodal"]
    assert summary["config"]["dirichlet_alpha"] == 1.0 and "client_3" in res.output
    res = runner.invoke(app, ["tokenizer", str(tmp_path / "c" / "public"), "--out", str(tmp_path / "tok"),
                              "--vocab-size", "300"])
    assert res.exit_code == 0, res.output
    vocab = (tmp_path / "tok" / "vocab.txt").read_text().splitlines()
    assert vocab[0] == "[PAD]" and 50 < len(vocab) <= 300 and f"{len(vocab)} tokens from 8 texts" in res.output
    res = runner.invoke(app, ["partition", str(tmp_path / "s"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "already holds a partition" in " ".join(res.output.split())


def test_cli_partition_reports_issues(tmp_path: Path) -> None:
    src = make_labelled_set(tmp_path / "src", n=120, sites=())
    lines = (src / "manifest.csv").read_text().splitlines()
    bad = [f"bad{i},images/nope{i}.png,,a,train,pb{i}," for i in range(25)]
    (src / "manifest.csv").write_text("\n".join(lines + bad) + "\n")
    res = CliRunner().invoke(app, ["partition", str(src), "--out", str(tmp_path / "o"), "--clients", "4",
                                   "--public-size", "5", "--mode", "sample", "--sample-missing", "0.3", "0", "0"])
    assert res.exit_code == 0, res.output
    assert "50 loader issue(s)" in res.output and "... and 30 more" in res.output
    assert "image file not found" in " ".join(res.output.split()) and "mixed" in res.output
    summary = json.loads((tmp_path / "o" / "partition.json").read_text())
    assert summary["config"]["sample_missing"] == [0.3, 0.0, 0.0]
