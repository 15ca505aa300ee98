"""Small on-disk datasets for the data tests."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

REAL_SET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "covid-cxr-notes"


def write_png(path: Path, seed: int, size: int = 24, shape: tuple[int, int] | None = None) -> Path:
    """A small random grayscale PNG."""
    rng = np.random.default_rng(seed)
    h, w = shape or (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(path)
    return path


def write_csv(folder: Path, header: list[str], rows: list[list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_labelled_set(folder: Path, n: int = 400, seed: int = 0, classes: tuple[str, ...] = ("a", "b", "c", "d"),
                      sites: tuple[str, ...] = ("north", "south", "east"), test_split: bool = False,
                      p_no_text: float = 0.0) -> Path:
    """A dataset folder of ``n`` rows with multi-row patients, skewed labels, sites, tiny images."""
    rng = np.random.default_rng(seed)
    rows, pid, k = [], 0, 0
    while k < n:
        count = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
        label = classes[int(rng.choice(len(classes), p=np.linspace(2, 1, len(classes)) / np.linspace(2, 1, len(classes)).sum()))]
        site = sites[int(rng.integers(len(sites)))] if sites else ""
        split = "test" if test_split and rng.random() < 0.2 else "train"
        for _ in range(min(count, n - k)):
            rid = f"r{k:04d}"
            write_png(folder / "images" / f"{rid}.png", seed * 100000 + k, size=8)
            text = "" if rng.random() < p_no_text else f"report {rid} finding {label}"
            rows.append([rid, f"images/{rid}.png", text, label, split, f"pt{pid}", site])
            k += 1
        pid += 1
    write_csv(folder, ["id", "image", "text", "label", "split", "patient_id", "site"], rows)
    return folder
