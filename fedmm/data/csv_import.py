"""Import any csv table of images + reports + labels (``fedmm data import csv``).

The caller names the columns: ``id_col`` (unique row id), ``image_col`` (image
path, relative to ``image_root``, default the csv's folder; empty = no image),
``text_col`` (report text, or with ``text_from_file`` a path to a report file;
``sections`` extracts FINDINGS / IMPRESSION from it), and the labels, either

* ``label_col``: the class name (several with ``label_sep``, e.g. ``|``), kept as written; or
* ``finding_cols``: one column per finding with CheXpert values 1 / 0 / -1 / empty
  (``chexpert`` = the 14 CheXpert columns, e.g. for CheXpert's own ``train.csv``),
  resolved by the uncertain policy of :mod:`fedmm.data.labels`.

``split_col``, ``patient_col`` and ``site_col`` are optional (split values such as
``validate`` become ``val``; the patient defaults to the row id). DICOM paths
(``.dcm``) are decoded as :mod:`fedmm.data.images` describes. The file may be
gzip-compressed (``.gz``).
"""
from __future__ import annotations

import os
from pathlib import Path

from .importing import ImportOptions, ImportSummary, ImportWriter, Study
from .labels import CHEXPERT_FINDINGS, findings_labels
from .reports import report_text
from .tables import cell, read_table, require_columns, split_name


def parse_finding_cols(text: str | None) -> list[str] | None:
    """``--finding-cols``: comma-separated column names, or ``chexpert`` for the 14 CheXpert columns."""
    if not text or not text.strip():
        return None
    if text.strip().lower() == "chexpert":
        return list(CHEXPERT_FINDINGS)
    return [c.strip() for c in text.split(",") if c.strip()]


def import_csv(src: str | os.PathLike, opts: ImportOptions, id_col: str = "id", image_col: str | None = "image",
               text_col: str | None = None, label_col: str | None = None, label_sep: str | None = None,
               finding_cols: list[str] | None = None, split_col: str | None = None, patient_col: str | None = None,
               site_col: str | None = None, image_root: str | os.PathLike | None = None,
               text_from_file: bool = False, sections: tuple[str, ...] | None = None,
               delimiter: str = ",") -> ImportSummary:
    """Convert the csv file ``src`` into the dataset folder ``opts.out`` (see the module docstring)."""
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such csv file")
    if (label_col is None) == (not finding_cols):
        raise ValueError("name the labels with exactly one of --label-col or --finding-cols")
    if not image_col and not text_col:
        raise ValueError("name at least one of --image-col or --text-col")
    root = Path(image_root) if image_root is not None else path.parent
    header, rows = read_table(path, delimiter=delimiter)
    wanted = [c for c in (id_col, image_col, text_col, label_col, split_col, patient_col, site_col) if c]
    require_columns(path, header, wanted + list(finding_cols or []))
    writer = ImportWriter("csv", root, opts, with_uncertain=bool(finding_cols))
    for line, row in rows:
        if writer.full:
            break
        rid = cell(row, id_col)
        if not rid:
            writer.skip(path, line, "", "empty id")
            continue
        uncertain: tuple[str, ...] = ()
        if finding_cols:
            try:
                labels, uncertain = findings_labels({c: row.get(c) for c in finding_cols}, opts.policy)
            except ValueError as exc:
                writer.skip(path, line, rid, "bad label value", str(exc))
                continue
        else:
            raw = cell(row, label_col)
            parts = raw.split(label_sep) if label_sep else [raw]
            labels = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
        text = cell(row, text_col)
        if text and text_from_file:
            report = root / text
            if not report.is_file():
                writer.skip(path, line, rid, "report file not found", str(report))
                continue
            text = report.read_text(encoding="utf-8", errors="replace")
        if text:
            text = report_text(text, sections) if sections else " ".join(text.split())
        image = cell(row, image_col)
        site = cell(row, site_col) if site_col else None
        writer.add(Study(id=rid, images=[root / image] if image else [], text=text, labels=labels,
                         uncertain=uncertain, patient_id=cell(row, patient_col) or rid, file=str(path), row=line,
                         split=split_name(cell(row, split_col)), site=site or None))
    return writer.finish()
