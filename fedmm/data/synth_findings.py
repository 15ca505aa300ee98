"""A multi-label findings table derived from a synthcxr dataset (no download needed).

synthcxr itself is single-label (:mod:`fedmm.data.synth`) and stays so. This module
writes a csv with one 1/0 column per *finding*, several of which hold for one study:
a finding is a set of synthcxr classes (``Lung Opacity`` = pneumonia, atelectasis or
nodule, so a pneumonia study is positive for ``Pneumonia`` and ``Lung Opacity``). The
images and reports are synthcxr's, unchanged. ``fedmm data import csv`` turns the table
into a multi-label dataset folder (``labels`` column)::

    fedmm data synth --out synth --n-samples 900
    python -m fedmm.data.synth_findings synth synth/findings.csv
    fedmm data import csv synth/findings.csv --out synth_ml --image-root synth --text-col text \\
        --finding-cols "$(python -m fedmm.data.synth_findings --columns)" \\
        --split-col split --patient-col patient_id --site-col site

The finding columns are written in :data:`FINDINGS` order.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from .manifest import MANIFEST_NAME

# finding column -> the synthcxr classes for which it is positive
FINDINGS: dict[str, tuple[str, ...]] = {
    "No Finding": ("no_finding",),
    "Lung Opacity": ("pneumonia", "atelectasis", "nodule"),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Pleural Effusion": ("effusion",),
    "Pleural Abnormality": ("effusion", "pneumothorax"),
    "Lung Lesion": ("nodule",),
}
KEPT = ("id", "image", "text", "split", "patient_id", "site")


def write_findings_table(synth_folder: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Write ``out_csv``: synthcxr's ``id, image, text, split, patient_id, site`` + one 1/0 column per finding.

    ``image`` stays relative to ``synth_folder`` (pass it as ``--image-root``). ``ValueError``
    for a manifest that is not synthcxr's (no single ``label`` column)."""
    src = Path(synth_folder) / MANIFEST_NAME
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file; make the dataset with 'fedmm data synth'")
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "label" not in rows[0]:
        raise ValueError(f"{src}: no 'label' column; expected a (single-label) synthcxr manifest")
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*KEPT, *FINDINGS])
        for row in rows:
            writer.writerow([row.get(k, "") for k in KEPT] + [int(row["label"] in v) for v in FINDINGS.values()])
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m fedmm.data.synth_findings SYNTH_FOLDER OUT_CSV`` (or ``--columns``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("synth_folder", nargs="?")
    ap.add_argument("out_csv", nargs="?")
    ap.add_argument("--columns", action="store_true", help="print the finding columns for --finding-cols")
    args = ap.parse_args(argv)
    if args.columns:
        print(",".join(FINDINGS))
        return
    if not args.synth_folder or not args.out_csv:
        ap.error("give SYNTH_FOLDER and OUT_CSV")
    try:
        print(write_findings_table(args.synth_folder, args.out_csv))
    except (OSError, ValueError) as exc:
        ap.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
