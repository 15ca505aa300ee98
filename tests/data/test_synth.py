"""synthcxr: format, determinism, long tail, and complementary modalities (cheap linear proxies)."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedmm.data.manifest import load_manifest
from fedmm.data.synth import SYNTH_CLASSES, SynthConfig, generate_synthcxr, make_synth_samples

from .proxies import image_features, ridge_scores, text_features


def test_generate_writes_loadable_folder(tmp_path: Path) -> None:
    out = generate_synthcxr(tmp_path / "s", SynthConfig(n_samples=60, image_size=32, seed=1))
    data = load_manifest(out, classes=SYNTH_CLASSES)
    assert data.issues == [] and len(data.records) == 60
    assert all(r.image is not None and r.text and len(r.labels) == 1 for r in data.records)
    assert {r.split for r in data.records} <= {"train", "test"}
    from PIL import Image
    with Image.open(data.records[0].image) as im:
        assert im.size == (32, 32) and im.mode == "L"
    by_patient: dict[str, set] = {}
    for r in data.records:
        by_patient.setdefault(r.patient_id, set()).add((r.labels, r.split, r.site))
    assert all(len(v) == 1 for v in by_patient.values())   # a patient's studies agree


def test_deterministic_per_seed(tmp_path: Path) -> None:
    cfg = SynthConfig(n_samples=30, seed=7)
    a, b = generate_synthcxr(tmp_path / "a", cfg), generate_synthcxr(tmp_path / "b", cfg)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 31
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    c = make_synth_samples(SynthConfig(n_samples=30, seed=8))
    d = make_synth_samples(cfg)
    assert not np.array_equal(c.images, d.images) and c.texts != d.texts


@pytest.fixture(scope="module")
def samples():
    return make_synth_samples(SynthConfig(n_samples=3000, seed=0))


def test_long_tail_and_splits(samples) -> None:
    freq = np.bincount(samples.labels, minlength=len(SYNTH_CLASSES)) / len(samples)
    assert len(SYNTH_CLASSES) >= 6 and freq.argmax() == SYNTH_CLASSES.index("no_finding")
    assert freq.max() > 4 * freq.min()
    for rare in ("pneumothorax", "nodule"):
        assert 0.03 < freq[SYNTH_CLASSES.index(rare)] < 0.09
    test_share = Counter(samples.splits)["test"] / len(samples)
    assert 0.14 < test_share < 0.20
    for c in range(len(SYNTH_CLASSES)):   # the test split is stratified per class
        in_class = samples.labels == c
        share = np.mean([s == "test" for s, m in zip(samples.splits, in_class) if m])
        assert 0.08 < share < 0.28


def test_reports_do_not_name_the_class(samples) -> None:
    words = [set(re.findall(r"[a-z]+", t.lower())) for t in samples.texts]
    assert not any("pneumonia" in w for w in words)
    ptx = SYNTH_CLASSES.index("pneumothorax")
    assert not any("pneumothorax" in w for w, y in zip(words, samples.labels) if y == ptx)
    # negations mention other findings ("no effusion"), so words alone are not labels
    eff = SYNTH_CLASSES.index("effusion")
    assert sum("effusion" in w for w, y in zip(words, samples.labels) if y != eff) > 100


def _pair_accuracy(scores: np.ndarray, y: np.ndarray, a: str, b: str) -> float:
    """Balanced accuracy of telling class a from b (true a/b samples, scores of a vs b)."""
    ia, ib = SYNTH_CLASSES.index(a), SYNTH_CLASSES.index(b)
    m = (y == ia) | (y == ib)
    pred = np.where(scores[m, ia] >= scores[m, ib], ia, ib)
    return 0.5 * (np.mean(pred[y[m] == ia] == ia) + np.mean(pred[y[m] == ib] == ib))


def test_modalities_are_complementary(samples) -> None:
    train = np.array([s == "train" for s in samples.splits])
    y = samples.labels
    x_img = image_features(samples.images)
    x_txt = text_features([t for t, keep in zip(samples.texts, train) if keep], samples.texts, 600)
    x_both = np.concatenate([x_img, x_txt], 1)
    scores = {name: ridge_scores(x[train], y[train], x[~train], len(SYNTH_CLASSES))
              for name, x in (("image", x_img), ("text", x_txt), ("both", x_both))}
    acc = {k: float(np.mean(s.argmax(1) == y[~train])) for k, s in scores.items()}
    majority = np.bincount(y[~train]).max() / (~train).sum()
    print(f"proxy accuracies: {acc} (majority class {majority:.3f})")
    assert acc["image"] > majority + 0.15 and acc["text"] > majority + 0.15
    assert acc["both"] >= acc["image"] + 0.08 and acc["both"] >= acc["text"] + 0.08
    # by design: the image cannot tell pneumonia from atelectasis, the report can ...
    assert _pair_accuracy(scores["image"], y[~train], "pneumonia", "atelectasis") < 0.65
    assert _pair_accuracy(scores["text"], y[~train], "pneumonia", "atelectasis") > 0.8
    # ... and the report cannot tell cardiomegaly from effusion, the image can
    assert _pair_accuracy(scores["text"], y[~train], "cardiomegaly", "effusion") < 0.72
    assert _pair_accuracy(scores["image"], y[~train], "cardiomegaly", "effusion") > 0.9
