"""Partition invariants: patients whole, rows used once, modalities as configured, determinism."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from fedmm.data.manifest import load_manifest
from fedmm.data.partition import PartitionConfig, partition_dataset

from .helpers import make_labelled_set


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_labelled_set(tmp_path_factory.mktemp("src"), n=400, p_no_text=0.05)


def _folders(root: Path, summary: dict) -> dict[str, Path]:
    out = {f"{c['name']}/{s}": root / c["name"] / s for c in summary["clients"] for s in ("train", "val")}
    return {**out, "public": root / "public", "test": root / "test"}


def _load_all(root: Path, summary: dict) -> dict:
    return {name: load_manifest(p, classes=summary["classes"], require_labels=name != "public")
            for name, p in _folders(root, summary).items()}


def _check_invariants(src: Path, root: Path, summary: dict, cfg: PartitionConfig) -> dict:
    loaded = _load_all(root, summary)
    source = {r.id: r for r in load_manifest(src).records}
    where_id: Counter = Counter()
    patient_home: dict[str, set[str]] = {}
    for name, data in loaded.items():
        assert data.issues == [], name
        for r in data.records:
            where_id[r.id] += 1
            owner = name.split("/")[0] if "/" in name else name
            patient_home.setdefault(r.patient_id, set()).add(name if name in ("public", "test") else owner)
            if "/" in name:
                patient_home[r.patient_id].add(name.split("/")[1])   # split within the client
            src_rec = source[r.id]
            assert r.patient_id == src_rec.patient_id and r.site == src_rec.site
            assert r.text in (None, src_rec.text)
            if r.image is not None:
                assert r.image.read_bytes() == src_rec.image.read_bytes()
                assert r.image.is_relative_to(data.root)
    assert max(where_id.values()) == 1, "a row was used twice"
    for pid, homes in patient_home.items():
        assert len(homes) == 1 or (len(homes) == 2 and homes & {"train", "val"} and len(homes & {"train", "val"}) == 1), (pid, homes)
    for c in summary["clients"]:
        train, val = loaded[f"{c['name']}/train"], loaded[f"{c['name']}/val"]
        assert (c["n_train"], c["n_val"]) == (len(train.records), len(val.records))
        if c["n_train"] < cfg.min_train_per_client:   # only allowed with an explicit warning
            assert f"{c['name']} has only" in " ".join(summary["warnings"])
        hist = Counter(r.labels[0] for r in train.records)
        assert c["label_hist"] == {k: hist.get(k, 0) for k in summary["classes"]}
        assert all(r.split == "train" for r in train.records) and all(r.split == "val" for r in val.records)
    pub, test = loaded["public"], loaded["test"]
    assert all(r.labels == () and r.image and r.text for r in pub.records)
    assert all(r.labels and r.image and r.text for r in test.records)
    assert (len(pub.records), len(test.records)) == (summary["n_public"], summary["n_test"])
    assert json.loads((root / "partition.json").read_text()) == summary
    gv = root / "server" / "global_vectors"
    assert gv.is_dir() and not any(gv.iterdir())
    return loaded


def test_structural_partition(source: Path, tmp_path: Path) -> None:
    cfg = PartitionConfig(n_clients=8, public_size=30, min_train_per_client=12, seed=3)
    summary = partition_dataset(source, tmp_path / "out", cfg)
    loaded = _check_invariants(source, tmp_path / "out", summary, cfg)
    kinds = [c["modality"] for c in summary["clients"]]
    assert kinds == ["image_only"] * 2 + ["text_only"] * 2 + ["multimodal"] * 4
    for c in summary["clients"]:
        recs = loaded[f"{c['name']}/train"].records + loaded[f"{c['name']}/val"].records
        if c["modality"] == "image_only":
            assert all(r.image is not None and r.text is None for r in recs)
        elif c["modality"] == "text_only":
            assert all(r.image is None and r.text is not None for r in recs)
        else:
            assert all(r.image is not None for r in recs) and sum(r.text is None for r in recs) < len(recs) / 4
    assert summary["n_public"] == 30 and summary["n_test"] == 60   # 15% of 400, whole patients
    total = sum(c["n_train"] + c["n_val"] for c in summary["clients"]) + summary["n_public"] + summary["n_test"]
    assert total <= 400
    img = next((tmp_path / "out" / "client_0" / "train" / "images").iterdir())
    assert os.stat(img).st_nlink >= 2   # hard-linked, not copied


def test_deterministic_per_seed(source: Path, tmp_path: Path) -> None:
    cfg = PartitionConfig(n_clients=6, public_size=20, dirichlet_alpha=0.5, seed=11)
    a = partition_dataset(source, tmp_path / "a", cfg)
    b = partition_dataset(source, tmp_path / "b", cfg)
    c = partition_dataset(source, tmp_path / "c", PartitionConfig(n_clients=6, public_size=20,
                                                                   dirichlet_alpha=0.5, seed=12))
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert a["clients"] != c["clients"]
    assert (tmp_path / "a" / "client_0/train/manifest.csv").read_bytes() != \
        (tmp_path / "c" / "client_0/train/manifest.csv").read_bytes()


def test_dirichlet_skew_and_minimum(source: Path, tmp_path: Path) -> None:
    def mean_top_share(summary):
        return sum(max(c["label_hist"].values()) / c["n_train"] for c in summary["clients"]) / len(summary["clients"])

    cfg = dict(n_clients=8, public_size=0, min_train_per_client=15, seed=5)
    iid = partition_dataset(source, tmp_path / "iid", PartitionConfig(**cfg))
    skew = partition_dataset(source, tmp_path / "skew", PartitionConfig(dirichlet_alpha=0.1, **cfg))
    _check_invariants(source, tmp_path / "skew", skew, PartitionConfig(dirichlet_alpha=0.1, **cfg))
    assert mean_top_share(skew) > mean_top_share(iid) + 0.2
    sizes = [c["n_train"] + c["n_val"] for c in iid["clients"]]
    assert max(sizes) - min(sizes) <= 4    # IID clients are balanced (patients hold <= 3 rows)


def test_client_level_missing(source: Path, tmp_path: Path) -> None:
    cfg = PartitionConfig(n_clients=12, mode="client", p_drop_modality=0.5, public_size=10, seed=2)
    summary = partition_dataset(source, tmp_path / "o", cfg)
    loaded = _check_invariants(source, tmp_path / "o", summary, cfg)
    kinds = Counter(c["modality"] for c in summary["clients"])
    assert set(kinds) <= {"image_only", "text_only", "multimodal"} and len(kinds) >= 2
    for c in summary["clients"]:
        recs = loaded[f"{c['name']}/train"].records
        assert any(r.image for r in recs) == (c["modality"] != "text_only")
        assert any(r.text for r in recs) == (c["modality"] != "image_only")


def test_sample_level_missing(source: Path, tmp_path: Path) -> None:
    cfg = PartitionConfig(n_clients=4, mode="sample", sample_missing=(0.2, 0.3, 0.1), public_size=0, seed=4)
    summary = partition_dataset(source, tmp_path / "o", cfg)
    loaded = _check_invariants(source, tmp_path / "o", summary, cfg)
    assert {c["modality"] for c in summary["clients"]} == {"mixed"}
    recs = [r for n, d in loaded.items() if "/" in n for r in d.records]
    kept_before = 400 - summary["n_test"]
    n = len(recs)
    assert 0.8 * kept_before < n < 0.97 * kept_before      # about 10% lost both modalities
    no_img, no_txt = sum(r.image is None for r in recs) / n, sum(r.text is None for r in recs) / n
    assert 0.14 < no_img < 0.3 and 0.25 < no_txt < 0.45   # 0.2/0.9 and (0.3/0.9 + natural 5%)


def test_site_mode_and_source_test_split(tmp_path: Path) -> None:
    src = make_labelled_set(tmp_path / "src", n=300, seed=1, sites=("zeta", "alpha", "mid", "tiny"),
                            test_split=True)
    rows = (src / "manifest.csv").read_text().splitlines()
    tiny = [r for r in rows if r.endswith(",tiny")]
    keep = [r for r in rows if not r.endswith(",tiny")] + tiny[:3]    # 'tiny' keeps 3 rows only
    (src / "manifest.csv").write_text("\n".join(keep) + "\n")
    cfg = PartitionConfig(mode="site", n_clients=99, public_size=15, min_train_per_client=5, seed=0)
    summary = partition_dataset(src, tmp_path / "o", cfg)
    loaded = _check_invariants(src, tmp_path / "o", summary, cfg)
    assert [c.get("sites") for c in summary["clients"]] == [["alpha"], ["mid"], ["zeta"], ["tiny"]]
    assert any("merged" in w for w in summary["warnings"])
    assert summary["clients"][3]["n_train"] + summary["clients"][3]["n_val"] <= 3
    assert all(c["n_train"] >= 5 for c in summary["clients"][:3])
    for c in summary["clients"][:3]:
        assert {r.site for r in loaded[f"{c['name']}/train"].records} == set(c["sites"])
    src_test = {r.id for r in load_manifest(src).records if r.split == "test"}
    assert {r.id for r in loaded["test"].records} == src_test


def test_errors_and_overwrite(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot give"):
        partition_dataset(source, tmp_path / "x", PartitionConfig(n_clients=40, public_size=0))
    with pytest.raises(ValueError, match="mode"):
        partition_dataset(source, tmp_path / "x", PartitionConfig(mode="nope"))
    with pytest.raises(ValueError, match="exceeds"):
        partition_dataset(source, tmp_path / "x", PartitionConfig(n_clients=3))
    cfg = PartitionConfig(n_clients=4, public_size=0, seed=1)
    partition_dataset(source, tmp_path / "o", cfg)
    with pytest.raises(FileExistsError):
        partition_dataset(source, tmp_path / "o", cfg)
    summary = partition_dataset(source, tmp_path / "o", PartitionConfig(n_clients=3, n_image_only=1,
                                                                        n_text_only=1, public_size=0), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "o").glob("client_*")) == ["client_0", "client_1", "client_2"]
    assert len(summary["clients"]) == 3
