"""Write the federated client layout produced by :mod:`fedmm.data.partition`.

``out_root/client_<k>/{train,val}/``, ``out_root/public/``, ``out_root/test/``
(each a dataset folder with ``manifest.csv`` and ``images/``),
``out_root/server/global_vectors/`` and ``out_root/partition.json``. Images
are hard-linked from the source (copied where linking fails).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

from .manifest import Record, write_manifest

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_dataset_folder(folder: Path, records: list[Record], classes: list[str] | None,
                         multilabel: bool) -> Path:
    """Link each record's image into ``folder/images/`` and write ``folder/manifest.csv``."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    out = []
    for rec in records:
        if rec.image is not None:
            stem = _UNSAFE.sub("_", rec.id) or "img"
            name, n = stem + Path(rec.image).suffix.lower(), 1
            while name in used:
                name, n = f"{stem}_{n}{Path(rec.image).suffix.lower()}", n + 1
            used.add(name)
            _link(Path(rec.image), images / name)
            rec = dataclasses.replace(rec, image=images / name)
        out.append(rec)
    return write_manifest(folder, out, classes=classes, multilabel=multilabel)


def _previous_outputs(out_root: Path) -> list[Path]:
    names = [out_root / "partition.json", out_root / "public", out_root / "test", out_root / "server",
             *sorted(out_root.glob("client_*"))]
    return [p for p in names if p.exists()]


def check_target(out_root: Path, overwrite: bool) -> None:
    """Raise ``FileExistsError`` if ``out_root`` holds a partition and ``overwrite`` is False."""
    existing = _previous_outputs(out_root)
    if existing and not overwrite:
        raise FileExistsError(f"{out_root} already holds a partition ({existing[0].name}); "
                              "use overwrite to replace it")


def _clear(out_root: Path, overwrite: bool) -> None:
    check_target(out_root, overwrite)
    for p in _previous_outputs(out_root):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def write_layout(out_root: Path, summary: dict, client_splits: list[tuple[list[Record], list[Record]]],
                 public: list[Record], test: list[Record], classes: list[str], multilabel: bool,
                 overwrite: bool = False) -> None:
    """Write every folder of the layout and ``partition.json`` (= ``summary``)."""
    out_root.mkdir(parents=True, exist_ok=True)
    _clear(out_root, overwrite)
    for k, (train, val) in enumerate(client_splits):
        write_dataset_folder(out_root / f"client_{k}" / "train", train, classes, multilabel)
        write_dataset_folder(out_root / f"client_{k}" / "val", val, classes, multilabel)
    write_dataset_folder(out_root / "public", public, None, multilabel)
    write_dataset_folder(out_root / "test", test, classes, multilabel)
    (out_root / "server" / "global_vectors").mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    (out_root / "partition.json").write_text(text, encoding="utf-8")
