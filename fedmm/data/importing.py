"""Shared machinery of the dataset importers (``fedmm data import ...``).

An importer turns a published layout into :class:`Study` rows and hands them to
an :class:`ImportWriter`, which writes the dataset folder fedmm reads
(:mod:`fedmm.data.manifest`): ``OUT/manifest.csv`` (``id, image, text,
labels`` — or ``label`` with ``--single-label`` — ``split, patient_id, site``,
plus ``uncertain`` for labeler sources), the images under ``OUT/images/`` (the
source's relative paths kept), ``OUT/import_issues.csv`` (every skipped row:
file, row, id, reason, detail) and ``OUT/import_summary.json``.

Images are hard-linked (copied where linking fails), copied or symlinked
(``link``). A DICOM image is decoded (:func:`fedmm.data.images.read_dicom`) and
written as an 8-bit PNG unless ``keep_dicom``; ``resize`` > 0 writes every image
as a PNG whose longer side is at most that many pixels. A bad row never stops an
import: it is skipped and recorded as an :class:`ImportIssue`.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .images import is_dicom, read_image, verify_image
from .labels import LabelPolicy, finish_labels
from .manifest import LABEL_SEP, MANIFEST_NAME

LINK_MODES = ("hard", "copy", "symlink")
ISSUES_NAME = "import_issues.csv"
SUMMARY_NAME = "import_summary.json"
MISSING_IMAGE = "image file not found"
BAD_IMAGE = "unreadable image"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class ImportIssue:
    """One skipped source row: where it came from (``row`` = csv line, 0 = whole file) and why."""

    file: str
    row: int
    id: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.row}" if self.row else self.file
        return f"{where}: {self.id}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Study:
    """One manifest row to write. ``images`` are candidates in preference order (first usable wins)."""

    id: str
    images: list[Path]
    text: str
    labels: tuple[str, ...]
    patient_id: str
    file: str
    row: int = 0
    uncertain: tuple[str, ...] = ()
    split: str | None = None
    site: str | None = None
    note: str = ""   # added to the detail when the row is skipped for its labels


@dataclass
class ImportOptions:
    """Output options shared by all importers."""

    out: Path
    overwrite: bool = False
    link: str = "hard"
    resize: int = 0
    keep_dicom: bool = False
    limit: int | None = None
    site: str | None = None
    policy: LabelPolicy = field(default_factory=LabelPolicy)

    def validate(self) -> None:
        """Raise ``ValueError`` for an option out of range."""
        if self.link not in LINK_MODES:
            raise ValueError(f"link mode {self.link!r}: use one of {', '.join(LINK_MODES)}")
        if self.resize < 0:
            raise ValueError("resize must be >= 0 (0 = keep the image size)")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1")
        self.policy.validate()


@dataclass
class ImportSummary:
    """What an import wrote and skipped."""

    format: str
    manifest: Path
    written: int
    skipped: Counter
    issues: list[ImportIssue]
    no_text: int
    classes: Counter
    multilabel: bool

    def to_dict(self) -> dict:
        """JSON-ready form (``import_summary.json``)."""
        return {"format": self.format, "manifest": self.manifest.name, "written": self.written,
                "skipped": dict(self.skipped.most_common()), "n_skipped": sum(self.skipped.values()),
                "no_text": self.no_text, "multilabel": self.multilabel, "classes": dict(sorted(self.classes.items()))}


class ImportWriter:
    """Collects :class:`Study` rows, places their images and writes the dataset folder."""

    def __init__(self, fmt: str, source_root: Path, opts: ImportOptions, with_uncertain: bool = False) -> None:
        opts.validate()
        self.fmt, self.opts, self.with_uncertain = fmt, opts, with_uncertain
        self.source_root = Path(os.path.abspath(source_root))
        self.out = Path(os.path.abspath(opts.out))
        if self.out == self.source_root or self.out in self.source_root.parents:
            raise ValueError(f"--out {self.out} holds the source {self.source_root}; choose another folder")
        self._prepare()
        self.rows: list[list[str]] = []
        self.issues: list[ImportIssue] = []
        self.skipped: Counter = Counter()
        self.classes: Counter = Counter()
        self.ids: set[str] = set()
        self.placed: dict[Path, Path] = {}      # written image -> its source file
        self.by_source: dict[Path, Path] = {}   # source file -> written image
        self.no_text = 0

    def _prepare(self) -> None:
        made = [self.out / n for n in (MANIFEST_NAME, ISSUES_NAME, SUMMARY_NAME, "images")]
        existing = [p for p in made if p.exists() or p.is_symlink()]
        if existing and not self.opts.overwrite:
            raise FileExistsError(f"{self.out} already holds {existing[0].name}; use --overwrite to replace "
                                  f"{MANIFEST_NAME}, images/ and the import reports there")
        for p in existing:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        (self.out / "images").mkdir(parents=True, exist_ok=True)

    @property
    def full(self) -> bool:
        """Whether ``limit`` rows have been written."""
        return self.opts.limit is not None and len(self.rows) >= self.opts.limit

    def skip(self, file: str | Path, row: int, rid: str, reason: str, detail: str = "") -> None:
        """Record a skipped source row."""
        self.issues.append(ImportIssue(str(file), row, rid, reason, detail))
        self.skipped[reason] += 1

    def _place(self, src: Path, rid: str) -> Path:
        src_abs = Path(os.path.abspath(src))
        if src_abs in self.by_source:   # the same source image used by two rows
            return self.by_source[src_abs]
        if src_abs.is_relative_to(self.source_root):
            rel = src_abs.relative_to(self.source_root)
        else:
            rel = Path((_UNSAFE.sub("_", rid) or "img") + src.suffix.lower())
        dest = self.out / "images" / rel
        convert = self.opts.resize > 0 or (is_dicom(src) and not self.opts.keep_dicom)
        if convert:
            dest = dest.with_suffix(".png")
        stem, n = dest, 1
        while dest in self.placed:   # another source file already took the name
            dest, n = stem.with_name(f"{stem.stem}_{n}{stem.suffix}"), n + 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        if convert:
            im = Image.fromarray(read_image(src))
            if self.opts.resize:
                im.thumbnail((self.opts.resize, self.opts.resize), Image.Resampling.BILINEAR)
            im.save(dest)
        elif self.opts.link == "symlink":
            os.symlink(src_abs, dest)
        elif self.opts.link == "copy":
            shutil.copyfile(src_abs, dest)
        else:
            try:
                os.link(src_abs, dest)
            except OSError:
                shutil.copyfile(src_abs, dest)
        self.placed[dest], self.by_source[src_abs] = src_abs, dest
        return dest

    def _image(self, study: Study) -> tuple[Path | None, tuple[str, str] | None]:
        problem: tuple[str, str] | None = None
        for candidate in study.images:
            if not candidate.is_file():
                problem = problem or (MISSING_IMAGE, str(candidate))
                continue
            try:
                verify_image(candidate)
                return self._place(candidate, study.id), None
            except Exception as exc:  # corrupt files raise many types; the row is skipped
                problem = (BAD_IMAGE, f"{candidate}: {type(exc).__name__}: {exc}")
        return None, problem

    def add(self, study: Study) -> bool:
        """Write ``study`` (True) or record why it is skipped (False)."""
        if study.id in self.ids:
            self.skip(study.file, study.row, study.id, "duplicate id")
            return False
        labels, why = finish_labels(study.labels, study.uncertain, self.opts.policy)
        if why is not None:
            detail = "; ".join(p for p in (why[1], study.note) if p)
            self.skip(study.file, study.row, study.id, why[0], detail)
            return False
        image, problem = self._image(study)
        if problem is not None:
            self.skip(study.file, study.row, study.id, *problem)
            return False
        if image is None and not study.text:
            self.skip(study.file, study.row, study.id, "no image and no text")
            return False
        self.ids.add(study.id)
        self.no_text += not study.text
        self.classes.update(labels)
        site = study.site if study.site is not None else self.opts.site
        row = [study.id, image.relative_to(self.out).as_posix() if image else "", study.text,
               LABEL_SEP.join(labels), study.split or "", study.patient_id or study.id, site or ""]
        if self.with_uncertain:
            row.append(LABEL_SEP.join(n for n in study.uncertain if self.opts.policy.keeps(n)))
        self.rows.append(row)
        return True

    def finish(self) -> ImportSummary:
        """Write ``manifest.csv``, ``import_issues.csv`` and ``import_summary.json``; return the summary."""
        multilabel = not self.opts.policy.single_label
        header = ["id", "image", "text", "labels" if multilabel else "label", "split", "patient_id", "site"]
        if self.with_uncertain:
            header.append("uncertain")
        manifest = self.out / MANIFEST_NAME
        with open(manifest, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(self.rows)
        with open(self.out / ISSUES_NAME, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["file", "row", "id", "reason", "detail"])
            writer.writerows([i.file, i.row, i.id, i.reason, i.detail] for i in self.issues)
        summary = ImportSummary(self.fmt, manifest, len(self.rows), self.skipped, self.issues, self.no_text,
                                self.classes, multilabel)
        text = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n"
        (self.out / SUMMARY_NAME).write_text(text, encoding="utf-8")
        return summary
