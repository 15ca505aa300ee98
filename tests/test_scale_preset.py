"""The ``scale`` preset: 300 small clients, each with a valid train/val split and its declared
modalities; resized by ``scale_overrides`` to fewer clients of the same size. No training.

The source is synthcxr's own rows (patients, labels, test split, reports) at the preset's size,
with every row pointing at one shared image file: the partition never reads pixels, and writing
12,000 images would take minutes.
"""
import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from fedmm.cli.preflight import load_cli_config
from fedmm.config import PRESETS, load_config, scale_overrides
from fedmm.data.manifest import load_manifest
from fedmm.data.partition import partition_dataset
from fedmm.data.synth import SYNTH_CLASSES, SynthConfig, make_synth_samples
from fedmm.engines.prepare import partition_config


def _source(folder, n_samples: int):
    """A dataset folder with synthcxr's rows for ``n_samples`` (as the cache would build it)."""
    data = make_synth_samples(SynthConfig(n_samples=n_samples, image_size=16, seed=0))
    (folder / "images").mkdir(parents=True)
    Image.fromarray(data.images[0]).save(folder / "images" / "x.png")
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "image", "text", "label", "split", "patient_id", "site"])
        for i in range(len(data)):
            writer.writerow([f"s{i:05d}", "images/x.png", data.texts[i], SYNTH_CLASSES[data.labels[i]],
                             data.splits[i], data.patient_ids[i], data.sites[i]])
    return folder


def _partition(tmp_path, cfg) -> dict:
    src = _source(tmp_path / "src", cfg.data.n_samples)
    return partition_dataset(src, tmp_path / "clients", partition_config(cfg))


def _check_clients(root, summary: dict, cfg) -> None:
    clients = summary["clients"]
    assert len(clients) == cfg.data.n_clients
    kinds = Counter(c["modality"] for c in clients)
    assert kinds == {"image_only": cfg.data.n_image_only, "text_only": cfg.data.n_text_only,
                     "multimodal": cfg.data.n_clients - cfg.data.n_image_only - cfg.data.n_text_only}
    for c in clients:
        assert c["n_train"] >= summary["config"]["min_train_per_client"] and c["n_val"] >= 1, c
        want_image, want_text = c["modality"] != "text_only", c["modality"] != "image_only"
        assert c["n_train_image"] == (c["n_train"] if want_image else 0), c
        assert c["n_train_text"] == (c["n_train"] if want_text else 0), c
        val = load_manifest(root / c["name"] / "val", verify_images=False).records
        assert len(val) == c["n_val"]
        assert all((r.image is not None) == want_image and (r.text is not None) == want_text for r in val), c["name"]
    assert not [w for w in summary["warnings"] if "client" in w or "public" in w], summary["warnings"]
    assert summary["n_public"] == cfg.data.public_size


def test_scale_preset_loads_and_passes_the_run_checks():
    cfg = load_config(preset="scale")
    assert "scale" in PRESETS and cfg.data.n_clients == 300 and cfg.data.partition == "structural"
    share = (cfg.data.n_image_only + cfg.data.n_text_only) / cfg.data.n_clients
    default = load_config()
    assert share == pytest.approx((default.data.n_image_only + default.data.n_text_only) / default.data.n_clients)
    partition_config(cfg).validate()
    assert scale_overrides(300) == [f"{k}={PRESETS['scale'][k]}" for k in
                                    ("data.n_clients", "data.n_samples", "data.n_image_only", "data.n_text_only")]
    load_cli_config(None, ["device=cpu"], "scale")   # what 'fedmm run --preset scale' checks first
    load_cli_config(None, ["device=cpu", *scale_overrides(30)], "scale")


@pytest.fixture(scope="module")
def scale_partition(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    return tmp, _partition(tmp, load_config(preset="scale"))


def test_scale_preset_partitions_300_clients_validly(scale_partition):
    tmp, summary = scale_partition
    _check_clients(tmp / "clients", summary, load_config(preset="scale"))
    assert json.loads((tmp / "clients" / "partition.json").read_text())["clients"] == summary["clients"]


def test_scaled_down_preset_keeps_the_client_size(tmp_path, scale_partition):
    small = load_config(None, scale_overrides(30), "scale")
    assert (small.data.n_clients, small.data.n_image_only, small.data.n_text_only) == (30, 2, 2)
    summary = _partition(tmp_path, small)
    _check_clients(tmp_path / "clients", summary, small)
    size = lambda s: np.mean([c["n_train"] + c["n_val"] for c in s["clients"]])  # noqa: E731
    assert size(summary) == pytest.approx(size(scale_partition[1]), rel=0.05)
