"""Dataset folders: ``manifest.csv`` + image files, loaded and validated row by row.

A dataset folder holds ``manifest.csv`` with columns ``id, image, text, label,
split`` (optional ``patient_id, site``); multi-label data uses ``labels``
(``|``-separated class names) instead of ``label``. Image paths are relative to
the folder; an empty ``image`` or ``text`` cell means that modality is missing.

Bad rows never abort a load: each one becomes a :class:`RowIssue` (file, csv
line, reason) and is skipped or degraded (see :func:`load_manifest`). Only a
file that is unusable as a whole raises :class:`ManifestError`.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .images import verify_image

MANIFEST_NAME = "manifest.csv"
BASE_COLUMNS = ("id", "image", "text")
OPTIONAL_COLUMNS = ("split", "patient_id", "site")
LABEL_SEP = "|"


class ManifestError(ValueError):
    """The manifest as a whole is unusable (missing file, missing columns, not a CSV)."""


@dataclass(frozen=True)
class Record:
    """One sample. ``image``/``text`` are ``None`` when that modality is missing."""

    id: str
    image: Path | None
    text: str | None
    labels: tuple[str, ...]
    split: str | None
    patient_id: str
    site: str | None

    @property
    def label(self) -> str | None:
        """The single label (``None`` when unlabelled); first label of multi-label rows."""
        return self.labels[0] if self.labels else None


@dataclass(frozen=True)
class RowIssue:
    """A problem with one manifest row; ``row`` is the csv line (header = line 1)."""

    file: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.reason}"


@dataclass
class ManifestData:
    """A loaded dataset folder: the usable records and the issues met on the way."""

    root: Path
    records: list[Record]
    classes: list[str]
    multilabel: bool
    issues: list[RowIssue] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)   # record id -> csv line (for later issues)

    def __len__(self) -> int:
        return len(self.records)


def _cell(row: dict, name: str) -> str:
    value = row.get(name)
    return value.strip() if isinstance(value, str) else ""


def _parse_labels(raw: str, multilabel: bool) -> tuple[str, ...]:
    if not multilabel:
        return (raw,) if raw else ()
    names = [part.strip() for part in raw.split(LABEL_SEP)]
    return tuple(dict.fromkeys(n for n in names if n))


def _check_image(path: Path, verify: bool) -> str | None:
    """Return a reason string when ``path`` is not a usable image, else ``None``."""
    if not path.is_file():
        return f"image file not found: {path}"
    if verify:
        try:
            verify_image(path)   # PIL header check; DICOM via pydicom
        except Exception as exc:  # PIL raises many types for corrupt files
            return f"unreadable image {path}: {type(exc).__name__}: {exc}"
    return None


def _read_rows(manifest: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Parse the csv; return the header and ``(line_number, row)`` pairs.

    Raises :class:`ManifestError` naming the line when the file is not UTF-8 or a row is no CSV."""
    rows, prev = [], 0
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            prev = reader.line_num
            for row in reader:
                # a quoted cell may span lines: the row starts after the previous one ended
                rows.append((prev + 1, row))
                prev = reader.line_num
    except csv.Error as exc:
        raise ManifestError(f"{manifest}:{prev + 1}: not readable as CSV ({exc}); fix or remove that row") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest}:{_first_non_utf8_line(manifest)}: not UTF-8 text; "
                            "save the file as UTF-8") from exc
    return header, rows


def _first_non_utf8_line(path: Path) -> int:
    """The 1-based number of the first line of ``path`` that is not valid UTF-8 (0 if none)."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return 0


def load_manifest(
    folder: str | os.PathLike,
    classes: list[str] | None = None,
    require_labels: bool = True,
    verify_images: bool = True,
) -> ManifestData:
    """Load and validate ``folder/manifest.csv``.

    Row rules (each problem is recorded as a :class:`RowIssue`): empty id,
    duplicate id, unknown label (when ``classes`` is given) and empty label
    (when ``require_labels``) skip the row; a missing or unreadable image file
    degrades the row to text-only; a row left with neither image nor text is
    skipped. ``classes`` defaults to the sorted unique labels of the kept rows.
    With ``verify_images`` each image header is checked with PIL (no decode).
    Raises :class:`ManifestError` when the file or a required column is missing.
    """
    root = Path(os.path.abspath(folder))
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in {root}")
    header, rows = _read_rows(manifest)
    missing = [c for c in BASE_COLUMNS if c not in header]
    if "label" in header and "labels" in header:
        raise ManifestError(f"{manifest}: has both 'label' and 'labels' columns; keep one")
    multilabel = "labels" in header
    label_col = "labels" if multilabel else "label"
    if require_labels and label_col not in header:
        missing.append("label (or labels)")
    if missing:
        need = "id, image, text and label or labels" if require_labels else "id, image and text"
        raise ManifestError(f"{manifest}: missing required column(s): {', '.join(missing)}; "
                            f"the header (line 1) needs {need}")

    known = set(classes) if classes is not None else None
    fname = str(manifest)
    issues: list[RowIssue] = []
    records: list[Record] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        def issue(reason: str) -> None:
            issues.append(RowIssue(fname, line, reason))

        if None in row:  # more cells than header columns
            issue(f"{len(row[None])} cell(s) more than the header has; row skipped")
            continue
        rid = _cell(row, "id")
        if not rid:
            issue("empty id; row skipped")
            continue
        if rid in first_line:
            issue(f"duplicate id {rid!r} (first on line {first_line[rid]}); row skipped")
            continue
        first_line[rid] = line
        labels = _parse_labels(_cell(row, label_col), multilabel)
        unknown = [name for name in labels if known is not None and name not in known]
        if unknown:
            issue(f"unknown label(s) {', '.join(map(repr, unknown))}; row skipped")
            continue
        if require_labels and not labels:
            issue("empty label; row skipped")
            continue
        image: Path | None = None
        image_cell = _cell(row, "image")
        if image_cell:
            candidate = Path(os.path.abspath(root / image_cell))
            problem = _check_image(candidate, verify_images)
            if problem is None:
                image = candidate
            else:
                issue(problem + ("; image dropped" if _cell(row, "text") else ""))
        text = _cell(row, "text") or None
        if image is None and text is None:
            issue("no usable image and no text; row skipped")
            continue
        records.append(Record(
            id=rid,
            image=image,
            text=text,
            labels=labels,
            split=_cell(row, "split") or None,
            patient_id=_cell(row, "patient_id") or rid,
            site=_cell(row, "site") or None,
        ))
    if classes is None:
        classes = sorted({name for rec in records for name in rec.labels})
    lines = {rec.id: first_line[rec.id] for rec in records}
    return ManifestData(root=root, records=records, classes=list(classes),
                        multilabel=multilabel, issues=issues, lines=lines)


def write_manifest(
    folder: str | os.PathLike,
    records: Iterable[Record],
    classes: list[str] | None = None,
    multilabel: bool | None = None,
) -> Path:
    """Write ``folder/manifest.csv`` for ``records`` and return its path.

    Image paths are stored relative to ``folder``, so every image must live
    under it (``ValueError`` otherwise). When ``classes`` is given every label
    must be one of them. ``multilabel`` selects the ``labels`` column; by
    default it is used when some record has more than one label.
    """
    root = Path(os.path.abspath(folder))
    records = list(records)
    if classes is not None:
        allowed = set(classes)
        for rec in records:
            bad = [name for name in rec.labels if name not in allowed]
            if bad:
                raise ValueError(f"record {rec.id!r}: label(s) {bad} not in classes")
    if multilabel is None:
        multilabel = any(len(rec.labels) > 1 for rec in records)
    if not multilabel and any(len(rec.labels) > 1 for rec in records):
        raise ValueError("records with several labels need multilabel=True")
    label_col = "labels" if multilabel else "label"
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "image", "text", label_col, "split", "patient_id", "site"])
        for rec in records:
            image = ""
            if rec.image is not None:
                abs_image = Path(os.path.abspath(rec.image))
                if not abs_image.is_relative_to(root):
                    raise ValueError(f"image {abs_image} of {rec.id!r} is not under {root}")
                image = abs_image.relative_to(root).as_posix()
            writer.writerow([rec.id, image, rec.text or "", LABEL_SEP.join(rec.labels),
                             rec.split or "", rec.patient_id, rec.site or ""])
    return path
