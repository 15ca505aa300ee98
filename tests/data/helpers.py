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
