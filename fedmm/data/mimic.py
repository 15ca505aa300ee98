"""Import the published MIMIC-CXR-JPG layout (``fedmm data import mimic-cxr``).

``SRC`` is the MIMIC-CXR-JPG root (e.g. ``.../mimic-cxr-jpg/2.0.0``) with

* ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (``dicom_id, subject_id, study_id, ViewPosition, ...``);
* ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` or ``-negbio.csv[.gz]`` (``subject_id, study_id`` + the
  14 CheXpert findings, 1 / 0 / -1 / empty; ``labeler`` picks the table);
* ``mimic-cxr-2.0.0-split.csv[.gz]`` (``dicom_id, ..., split``: train / validate / test; optional,
  ``validate`` becomes fedmm's ``val``);
* images ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (``ext="dcm"`` for the DICOM release).

Reports come from MIMIC-CXR (``reports`` folder, default ``SRC``):
``files/p10/p10000032/s50414267.txt`` (or without the ``files/`` level); their
FINDINGS / IMPRESSION sections become the text (:mod:`fedmm.data.reports`). A
study without a report is written image-only.

One row per study (id ``s<study_id>``, patient ``p<subject_id>``): the image
whose ``ViewPosition`` comes first in ``views`` (default PA, then AP; ``*`` =
any view, e.g. ``PA,AP,*``), ties broken by ``dicom_id``; a missing file falls
back to the next candidate. ``all_images`` writes one row per image in ``views``
instead (id = ``dicom_id``). Labels follow :mod:`fedmm.data.labels`.
"""
from __future__ import annotations

import os
from pathlib import Path

from .importing import ImportOptions, ImportSummary, ImportWriter, Study
from .labels import finding_columns, findings_labels
from .reports import SECTIONS, report_text
from .tables import cell, find_table, read_table, require_columns, split_name

PREFIX = "mimic-cxr-2.0.0-"
METADATA = PREFIX + "metadata.csv"
LABELERS = {"chexpert": PREFIX + "chexpert.csv", "negbio": PREFIX + "negbio.csv"}
SPLIT = PREFIX + "split.csv"
DEFAULT_VIEWS = ("PA", "AP")
ANY_VIEW = "*"
NO_VIEW = "no image in the chosen views"


def parse_views(text: str | None) -> tuple[str, ...]:
    """``--views`` (comma-separated ViewPosition values in preference order, ``*`` = any)."""
    views = tuple(dict.fromkeys(v.strip().upper() for v in (text or "").split(",") if v.strip()))
    if not views:
        raise ValueError("views: give at least one ViewPosition (e.g. PA,AP) or *")
    return views


def view_rank(view: str, views: tuple[str, ...]) -> int | None:
    """Preference rank of ``view`` in ``views`` (``None`` = not wanted)."""
    view = view.strip().upper()
    if view and view in views:
        return views.index(view)
    return views.index(ANY_VIEW) if ANY_VIEW in views else None


def study_dir(root: Path, subject: str, study: str) -> Path:
    """``root/files/p10/p10000032/s50414267`` for subject 10000032, study 50414267."""
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def _report(reports: Path, subject: str, study: str, sections: tuple[str, ...]) -> str:
    rel = Path(f"p{subject[:2]}") / f"p{subject}" / f"s{study}.txt"
    for path in (reports / "files" / rel, reports / rel):
        if path.is_file():
            return report_text(path.read_text(encoding="utf-8", errors="replace"), sections)
    return ""


def _labels_table(path: Path, columns: list[str]) -> dict[tuple[str, str], tuple[int, tuple]]:
    """``(subject, study) -> (csv line, finding cells in column order)`` (only what is needed: the table is big)."""
    header, rows = read_table(path)
    require_columns(path, header, ["subject_id", "study_id", *columns])
    return {(cell(row, "subject_id"), cell(row, "study_id")): (line, tuple(row.get(c) for c in columns))
            for line, row in rows}


def _splits(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    header, rows = read_table(path)
    require_columns(path, header, ["dicom_id", "split"])
    return {cell(row, "dicom_id"): split_name(row["split"]) or "" for _, row in rows}


def import_mimic(src: str | os.PathLike, opts: ImportOptions, reports: str | os.PathLike | None = None,
                 labeler: str = "chexpert", views: tuple[str, ...] = DEFAULT_VIEWS, all_images: bool = False,
                 ext: str = "jpg", sections: tuple[str, ...] = SECTIONS) -> ImportSummary:
    """Convert a MIMIC-CXR-JPG folder into the dataset folder ``opts.out`` (see the module docstring)."""
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (the MIMIC-CXR-JPG root)")
    if labeler not in LABELERS:
        raise ValueError(f"labeler {labeler!r}: use one of {', '.join(LABELERS)}")
    ext = ext.lower().lstrip(".")
    meta_path = find_table(root, METADATA)
    label_path = find_table(root, LABELERS[labeler])
    columns = finding_columns(opts.policy)
    labels = _labels_table(label_path, columns)
    splits = _splits(find_table(root, SPLIT, required=False))
    report_root = Path(reports) if reports is not None else root
    if not report_root.is_dir():
        raise FileNotFoundError(f"{report_root}: no such folder (the MIMIC-CXR reports)")

    header, meta_rows = read_table(meta_path)
    require_columns(meta_path, header, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    writer = ImportWriter("mimic-cxr", root, opts, with_uncertain=True)
    studies: dict[tuple[str, str], list[tuple[int, str, str]]] = {}   # -> [(line, dicom_id, view)]
    for line, row in meta_rows:
        ids = [cell(row, c) for c in ("subject_id", "study_id", "dicom_id")]
        if not all(ids):
            writer.skip(meta_path, line, ids[2], "incomplete metadata row", "needs subject_id, study_id, dicom_id")
            continue
        studies.setdefault((ids[0], ids[1]), []).append((line, ids[2], cell(row, "ViewPosition")))
    for (subject, study), rows in studies.items():
        if writer.full:
            break
        sid, first_line = f"s{study}", rows[0][0]
        found = labels.get((subject, study))
        if found is None:
            writer.skip(label_path, 0, sid, "no label row", f"subject {subject}, study {study}")
            continue
        try:
            positive, uncertain = findings_labels(dict(zip(columns, found[1])), opts.policy)
        except ValueError as exc:
            writer.skip(label_path, found[0], sid, "bad label value", str(exc))
            continue
        ranked = sorted((rank, dicom, line) for line, dicom, view in rows
                        if (rank := view_rank(view, views)) is not None)
        if not ranked:
            present = sorted({view or "(none)" for _, _, view in rows})
            writer.skip(meta_path, first_line, sid, NO_VIEW, f"wanted {','.join(views)}; has {','.join(present)}")
            continue
        text = _report(report_root, subject, study, sections)
        folder = study_dir(root, subject, study)
        common = dict(text=text, labels=positive, uncertain=uncertain, patient_id=f"p{subject}", file=str(meta_path))
        if all_images:
            for _, dicom, line in ranked:
                if writer.full:
                    break
                writer.add(Study(id=dicom, images=[folder / f"{dicom}.{ext}"], row=line,
                                 split=splits.get(dicom), **common))
        else:
            split = next((splits[d] for _, d, _ in ranked if d in splits), None)
            writer.add(Study(id=sid, images=[folder / f"{d}.{ext}" for _, d, _ in ranked], row=ranked[0][2],
                             split=split, **common))
    return writer.finish()
