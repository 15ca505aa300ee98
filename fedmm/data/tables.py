"""Csv tables of the published layouts: gzip-aware reading with line numbers, column checks."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Iterator

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
               "validation": "val", "test": "test", "testing": "test"}


def find_table(folder: Path, name: str, required: bool = True) -> Path | None:
    """``folder/name`` or ``folder/name.gz``; ``FileNotFoundError`` when required and absent."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"{folder}: neither {name} nor {name}.gz found")
    return None


def read_table(path: Path, delimiter: str = ",") -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """Header and ``(csv line, row)`` pairs of a csv file (gzip-compressed when it ends in ``.gz``)."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    fh = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(fh, delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header

    def rows() -> Iterator[tuple[int, dict]]:
        with fh:
            prev = reader.line_num
            try:
                for row in reader:
                    yield prev + 1, row
                    prev = reader.line_num
            except csv.Error as exc:
                raise ValueError(f"{path}:{prev + 1}: not readable as CSV ({exc})") from exc
    return header, rows()


def require_columns(path: Path, header: list[str], columns) -> None:
    """``ValueError`` naming the columns of ``columns`` missing from ``header``."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(header[:20])})")


def split_name(raw: str | None) -> str | None:
    """A source split value as fedmm's ``train`` / ``val`` / ``test`` (others kept lower-cased)."""
    text = (raw or "").strip().lower()
    return SPLIT_NAMES.get(text, text) or None


def cell(row: dict, name: str | None) -> str:
    """A stripped csv cell ('' when the column or value is missing)."""
    value = row.get(name) if name else None
    return value.strip() if isinstance(value, str) else ""
