"""The real covid-cxr-notes set: load it and run a one-round federation partitioned by site."""
from pathlib import Path

import pytest

from fedmm.config import load_config
from fedmm.data.manifest import load_manifest
from fedmm.engines.local import run_simulation

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "covid-cxr-notes"
pytestmark = pytest.mark.skipif(not (REAL / "manifest.csv").exists(), reason="real covid-cxr-notes set absent")


def test_real_set_loads_with_missing_notes():
    data = load_manifest(REAL)
    assert len(data.records) == 275
    assert sum(r.text is None for r in data.records) == 85
    assert all(r.image is not None for r in data.records)
    assert set(data.classes) == {"covid19", "other_pneumonia", "no_finding"}


def test_one_round_site_federation_on_real_data(tmp_path):
    cfg = load_config(None, [f"data.dataset={REAL}", "data.partition=site", "data.public_size=40",
                             "data.image_size=64", f"cache={tmp_path / 'cache'}", f"out={tmp_path}", "name=real",
                             "fed.rounds=1", "fed.n_centers=4", "fed.local_centers=2", "fed.min_cluster_size=2",
                             "train.kd_public_per_round=20", "fed.calib_steps=3"])
    summary = run_simulation(cfg, tmp_path / "real")
    assert summary["rounds"] == 1
    assert 0.0 <= summary["test"]["full"]["macro_f1"] <= 1.0
    per_client = (tmp_path / "real" / "results_per_client.json").read_text()
    assert "client_0" in per_client
