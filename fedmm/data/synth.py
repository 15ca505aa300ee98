"""synthcxr: the embedded synthetic chest X-ray + report benchmark.

Seven single-label classes with a long tail (``SYNTH_PRIORS``). Images are
drawn by :mod:`fedmm.data.synth_image`, reports written by
:mod:`fedmm.data.synth_text`. The modalities are complementary by design:

==================  ==========================  ==============================
pair                image                       report
==================  ==========================  ==============================
pneumonia /         identical focal opacity     clinical context differs
atelectasis                                     (infection vs post-operative)
cardiomegaly /      heart shadow vs blunted     same non-specific, hedged
effusion            costophrenic angle          wording, weak noisy hints
no_finding /        clear lungs vs small        same routine context, nodule
nodule              round nodule                often missed in the report
==================  ==========================  ==============================

Patients may have several studies (same label); the test split and sites are
assigned per patient. Sites differ in acquisition (exposure, noise).
Everything is drawn from ``numpy.random.Generator`` streams derived from the
seed, so the same config gives byte-identical files.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .synth_image import draw_batch
from .synth_text import ReportFacts, make_report

SYNTH_CLASSES: list[str] = ["no_finding", "pneumonia", "atelectasis", "cardiomegaly",
                            "effusion", "pneumothorax", "nodule"]
SYNTH_PRIORS: list[float] = [0.28, 0.18, 0.14, 0.14, 0.14, 0.07, 0.05]
_BATCH = 128
_ZONES = ("upper", "middle", "lower")


@dataclass
class SynthConfig:
    """Size and seed of a synthcxr dataset."""

    n_samples: int = 9000
    image_size: int = 64
    test_fraction: float = 0.17   # rows with split="test" (chosen per patient, per class)
    seed: int = 0
    n_sites: int = 5              # acquisition sites (site column); 0 = leave empty


@dataclass
class SynthSamples:
    """An in-memory synthcxr sample set (what :func:`generate_synthcxr` writes)."""

    images: np.ndarray        # [N, S, S] uint8
    texts: list[str]
    labels: np.ndarray        # [N] int64 indices into SYNTH_CLASSES
    patient_ids: list[str]
    sites: list[str]
    splits: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def _patients(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row -> patient index and per-patient class (1-3 studies per patient)."""
    studies = rng.choice([1, 2, 3], size=n, p=[0.85, 0.10, 0.05])
    row_patient = np.repeat(np.arange(n), studies)[:n]
    patient_label = rng.choice(len(SYNTH_CLASSES), size=n, p=SYNTH_PRIORS)
    return row_patient, patient_label


def _test_patients(rng: np.random.Generator, row_patient, patient_label, fraction: float) -> set[int]:
    """Per class, shuffled patients are taken until ``fraction`` of that class's rows."""
    counts = np.bincount(row_patient)
    chosen: set[int] = set()
    present = np.unique(row_patient)
    for c in range(len(SYNTH_CLASSES)):
        pats = present[patient_label[present] == c]
        pats = pats[rng.permutation(len(pats))]
        target, taken = fraction * counts[pats].sum(), 0
        for pt in pats:
            if taken >= target - 0.5 * counts[pt]:
                break
            chosen.add(int(pt))
            taken += counts[pt]
    return chosen


def _lung_point(rng, n, side, zone_idx, p_lo, p_hi, a, b, cx, cy):
    """Body-coordinate points inside a lung (side +1 = image right) in a given zone."""
    q_edges = np.array([[-0.62, -0.28], [-0.28, 0.04], [0.04, 0.26]])
    qn = rng.uniform(q_edges[zone_idx, 0], q_edges[zone_idx, 1])
    q = qn * b
    half = a * np.sqrt(np.clip(1 - (q / b) ** 2, 0.05, 1))
    p = rng.uniform(p_lo, p_hi, n) * half
    return cx * side + p * side, cy + q


def _sample_params(rng: np.random.Generator, labels: np.ndarray, site_ids: np.ndarray,
                   site_prof: np.ndarray) -> tuple[dict, list[dict]]:
    """Per-sample drawing parameters and the facts the report should agree with."""
    n = len(labels)
    U = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    is_ = {c: labels == i for i, c in enumerate(SYNTH_CLASSES)}
    P = dict(theta=np.clip(rng.normal(0, 0.045, n), -0.12, 0.12), scale=U(0.88, 1.05),
             shift_x=rng.normal(0, 0.03, n), shift_y=rng.normal(0, 0.03, n),
             body_w=U(0.85, 0.97), tissue=U(0.48, 0.58), lung_d=U(0.14, 0.24),
             lung_cx=U(0.40, 0.46), lung_cy=rng.normal(-0.05, 0.02, n),
             lung_a=U(0.29, 0.34), lung_b=U(0.72, 0.84),
             rib_sp=U(0.15, 0.19), rib_ph=U(0, 1), rib_amp=U(0.04, 0.10), mark_amp=U(0.025, 0.05))
    side = rng.choice([-1.0, 1.0], n)
    P["find_side"] = side
    hw = np.where(is_["cardiomegaly"], U(0.44, 0.54), U(0.29, 0.36))
    P.update(heart_w=hw, heart_x=0.10 + 0.5 * (hw - 0.32) + rng.normal(0, 0.015, n),
             heart_y=0.27 + rng.normal(0, 0.02, n), heart_h=0.22 + 0.3 * (hw - 0.32), heart_d=U(0.66, 0.76))
    P.update(eff_on=is_["effusion"].astype(float), eff_bilat=(rng.random(n) < 0.3).astype(float),
             eff_h=U(0.18, 0.38), eff_men=U(0.06, 0.14))
    P.update(ptx_on=is_["pneumothorax"].astype(float), ptx_r0=U(0.30, 0.52), ptx_line=U(0.08, 0.16))
    geo = (P["lung_a"], P["lung_b"], P["lung_cx"], P["lung_cy"])
    zone = rng.integers(0, 3, n)
    opacity = is_["pneumonia"] | is_["atelectasis"]
    second = opacity & (rng.random(n) < 0.3)
    for k, on, sd in (("op1", opacity, side), ("op2", second, np.where(rng.random(n) < 0.5, side, -side))):
        z = zone if k == "op1" else rng.integers(0, 3, n)
        ox, oy = _lung_point(rng, n, sd, z, -0.55, 0.65, *geo)
        P.update({k + "_x": ox, k + "_y": oy, k + "_rx": U(0.10, 0.20), k + "_ry": U(0.08, 0.18),
                  k + "_c": on * U(0.18, 0.34) * (1.0 if k == "op1" else 0.7)})
    nx, ny = _lung_point(rng, n, side, zone, 0.0, 0.6, *geo)
    P.update(nod_x=nx, nod_y=ny, nod_r=U(0.055, 0.085), nod_c=is_["nodule"] * U(0.20, 0.32))
    ecg_any = rng.random(n) < 0.3
    for k in range(4):
        ex = U(-0.8, 0.8)
        P.update({f"ecg{k}_on": (ecg_any & (rng.random(n) < 0.7)).astype(float), f"ecg{k}_x": ex,
                  f"ecg{k}_y": U(-0.75, 0.55), f"ecg{k}_wx": ex + rng.normal(0, 0.3, n)})
    tube_x0 = rng.normal(0.02, 0.03, n)
    P.update(tube_on=(rng.random(n) < 0.15).astype(float), tube_x0=tube_x0,
             tube_x1=tube_x0 + rng.normal(0.05, 0.05, n), tube_y1=U(0.2, 0.95))
    P.update(mark_x=rng.choice([-0.85, 0.75], n) + rng.normal(0, 0.02, n),
             mark_y=rng.choice([-0.88, 0.74], n) + rng.normal(0, 0.02, n))
    prof = site_prof[site_ids]  # [n, 3]: gamma, window low, noise
    P.update(gamma=prof[:, 0] * U(0.85, 1.15), lo=np.clip(prof[:, 1] + U(-0.03, 0.03), 0, 0.2),
             hi=U(0.85, 1.0), blur=(rng.random(n) < 0.3) * U(0.5, 1.0), noise=prof[:, 2] * U(0.7, 1.3))
    facts = []
    for i in range(n):
        label = SYNTH_CLASSES[labels[i]]
        s = "right" if side[i] < 0 else "left"  # patient's right is the image's left
        if label == "effusion" and P["eff_bilat"][i]:
            s = "bilateral"
        facts.append(dict(label=label, side=s, zone=_ZONES[zone[i]], electrodes=bool(ecg_any[i]),
                          tube=bool(P["tube_on"][i]), rotated=bool(abs(P["theta"][i]) > 0.06)))
    return P, facts


def make_synth_samples(cfg: SynthConfig = SynthConfig()) -> SynthSamples:
    """Generate a synthcxr sample set in memory (deterministic per ``cfg``)."""
    if cfg.n_samples < 1 or cfg.image_size < 16:
        raise ValueError("need n_samples >= 1 and image_size >= 16")
    ss = np.random.SeedSequence([cfg.seed, 0x5C4])
    meta_seq, param_seq, text_seq, pix_seq = ss.spawn(4)
    meta_rng, param_rng, text_rng = (np.random.default_rng(s) for s in (meta_seq, param_seq, text_seq))
    n = cfg.n_samples
    row_patient, patient_label = _patients(meta_rng, n)
    labels = patient_label[row_patient].astype(np.int64)
    test = _test_patients(meta_rng, row_patient, patient_label, cfg.test_fraction)
    n_sites = max(cfg.n_sites, 1)
    site_of_patient = meta_rng.integers(0, n_sites, size=n)
    site_prof = np.stack([meta_rng.uniform(0.8, 1.25, n_sites), meta_rng.uniform(0.0, 0.08, n_sites),
                          meta_rng.uniform(0.012, 0.03, n_sites)], axis=1)
    site_ids = site_of_patient[row_patient]
    params, facts = _sample_params(param_rng, labels, site_ids, site_prof)
    images = np.empty((n, cfg.image_size, cfg.image_size), dtype=np.uint8)
    batch_seqs = pix_seq.spawn((n + _BATCH - 1) // _BATCH)
    for b, start in enumerate(range(0, n, _BATCH)):
        sl = slice(start, start + _BATCH)
        images[sl] = draw_batch(np.random.default_rng(batch_seqs[b]),
                                {k: v[sl] for k, v in params.items()}, cfg.image_size)
    texts = [make_report(text_rng, ReportFacts(**f)) for f in facts]
    width = len(str(n - 1))
    return SynthSamples(
        images=images, texts=texts, labels=labels,
        patient_ids=[f"p{pt:0{width}d}" for pt in row_patient],
        sites=[f"site_{s}" if cfg.n_sites > 0 else "" for s in site_ids],
        splits=["test" if int(pt) in test else "train" for pt in row_patient],
    )


def generate_synthcxr(out_dir: str | os.PathLike, cfg: SynthConfig = SynthConfig()) -> Path:
    """Write a synthcxr dataset folder: ``out_dir/manifest.csv`` and ``out_dir/images/*.png``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    data = make_synth_samples(cfg)
    width = len(str(len(data) - 1))
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "image", "text", "label", "split", "patient_id", "site"])
        for i in range(len(data)):
            sid = f"s{i:0{width}d}"
            rel = f"images/{sid}.png"
            Image.fromarray(data.images[i]).save(out / rel, compress_level=1)
            writer.writerow([sid, rel, data.texts[i], SYNTH_CLASSES[data.labels[i]], data.splits[i],
                             data.patient_ids[i], data.sites[i]])
    return out
