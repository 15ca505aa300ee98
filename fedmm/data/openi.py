"""Import the Indiana University chest X-ray collection from Open-i (``fedmm data import openi``).

``SRC`` holds ``ecgen-radiology/*.xml`` (one report per file) and
``NLMCXR_png/*.png`` (or pass ``reports`` / ``images`` folders). Per report:
id = ``<uId id="CXR1">`` (else ``CXR<file stem>``), patient = the report id (the
collection has no patient ids), text = ``<AbstractText Label="FINDINGS">`` and
``Label="IMPRESSION"`` (:mod:`fedmm.data.reports`), image = the first
``<parentImage id="...">`` whose ``<id>.png`` exists (``all_images``: one row per
image, id = the image id). The XML is parsed with ``defusedxml``.

Labels come from the MeSH ``<major>`` terms: the heading before the first ``/``
(``Pleural Effusion/right/small`` -> ``pleural effusion``), matched without case
against :data:`MESH_TO_CLASS` (CheXpert class names, so imports can be pooled
with MIMIC-CXR): ``normal`` -> ``no_finding``, ``Cardiomegaly`` -> ``cardiomegaly``,
``Pulmonary Atelectasis`` / ``Atelectasis`` -> ``atelectasis``, ``Pleural Effusion``
-> ``pleural_effusion``, ``Pneumonia``, ``Pneumothorax``, ``Consolidation``, ``Edema``
/ ``Pulmonary Edema`` -> ``edema``, ``Opacity`` / ``Infiltrate`` / ``Airspace Disease``
-> ``lung_opacity``, ``Nodule`` / ``Mass`` -> ``lung_lesion``, ``Fractures, Bone`` ->
``fracture``, ``Pleural Thickening`` -> ``pleural_other``, ``Medical Device`` /
``Implanted Medical Device`` / ``Catheters, Indwelling`` / ``Tube, Inserted`` ->
``support_devices``. Other headings (``Calcified Granuloma``, ``Lung/hypoinflation``,
``No Indexing``, ...) are not used; a report with no mapped term is skipped.
``no_finding`` is dropped when a pathology is also listed. A csv
``term,class`` file (``mesh_map``) adds or overrides entries; an empty class removes one.
``--classes`` then restricts the classes kept.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from .importing import ImportOptions, ImportSummary, ImportWriter, Study
from .labels import NO_FINDING, class_name
from .reports import SECTIONS, compose_text

MESH_TO_CLASS = {
    "normal": NO_FINDING, "cardiomegaly": "cardiomegaly", "pulmonary atelectasis": "atelectasis",
    "atelectasis": "atelectasis", "pleural effusion": "pleural_effusion", "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax", "consolidation": "consolidation", "edema": "edema",
    "pulmonary edema": "edema", "opacity": "lung_opacity", "infiltrate": "lung_opacity",
    "airspace disease": "lung_opacity", "nodule": "lung_lesion", "mass": "lung_lesion",
    "fractures, bone": "fracture", "pleural thickening": "pleural_other", "medical device": "support_devices",
    "implanted medical device": "support_devices", "catheters, indwelling": "support_devices",
    "tube, inserted": "support_devices",
}
NOT_PATHOLOGY = {NO_FINDING, "support_devices"}
NO_MAPPED = "no MeSH major term maps to a class"


def _term_key(term: str) -> str:
    return " ".join(term.split("/")[0].split()).lower()


def load_mesh_map(path: str | os.PathLike | None) -> dict[str, str]:
    """:data:`MESH_TO_CLASS` updated from a ``term,class`` csv (no header needed; empty class = drop)."""
    mapping = dict(MESH_TO_CLASS)
    if path is None:
        return mapping
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for k, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip() or (k == 1 and row[0].strip().lower() == "term"):
                continue
            target = class_name(row[1]) if len(row) > 1 else ""
            if target:
                mapping[_term_key(row[0])] = target
            else:
                mapping.pop(_term_key(row[0]), None)
    return mapping


def mesh_labels(terms: list[str], mapping: dict[str, str]) -> tuple[str, ...]:
    """Classes of a report's MeSH major terms (``no_finding`` dropped beside a pathology)."""
    found = tuple(dict.fromkeys(mapping[k] for k in map(_term_key, terms) if k in mapping))
    if any(n not in NOT_PATHOLOGY for n in found):
        found = tuple(n for n in found if n != NO_FINDING)
    return found


def _xml():
    try:
        from defusedxml import ElementTree
    except ImportError as exc:  # pragma: no cover - defusedxml is in install_requires
        raise ValueError("reading Open-i XML needs defusedxml: pip install defusedxml") from exc
    return ElementTree


def _text(el) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def parse_report(path: Path) -> dict:
    """``{"id", "sections", "terms", "images"}`` of one Open-i report XML; ``ValueError`` if unreadable."""
    et = _xml()
    try:
        root = et.parse(path).getroot()
    except Exception as exc:  # ParseError, defusedxml's forbidden-construct errors, bad encoding
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    uid = root.find("uId")
    rid = (uid.get("id") or "").strip() if uid is not None else ""
    sections = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        if label in SECTIONS and _text(el):
            sections.setdefault(label, _text(el))
    return {"id": rid or f"CXR{path.stem}",
            "sections": sections,
            "terms": [_text(el) for mesh in root.iter("MeSH") for el in mesh.iter("major") if _text(el)],
            "images": [el.get("id").strip() for el in root.iter("parentImage") if (el.get("id") or "").strip()]}


def _natural(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _default_dir(root: Path, name: str) -> Path:
    return root / name if (root / name).is_dir() else root


def import_openi(src: str | os.PathLike, opts: ImportOptions, reports: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None, mesh_map: str | os.PathLike | None = None,
                 all_images: bool = False, sections: tuple[str, ...] = SECTIONS) -> ImportSummary:
    """Convert an Open-i IU X-ray folder into the dataset folder ``opts.out`` (see the module docstring)."""
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (the Open-i download)")
    report_dir = Path(reports) if reports is not None else _default_dir(root, "ecgen-radiology")
    image_dir = Path(images) if images is not None else _default_dir(root, "NLMCXR_png")
    files = sorted(report_dir.glob("*.xml"), key=_natural)
    if not files:
        raise FileNotFoundError(f"{report_dir}: no report .xml files")
    mapping = load_mesh_map(mesh_map)
    _xml()   # fail once, up front, when defusedxml is missing
    writer = ImportWriter("openi", image_dir, opts)
    for path in files:
        if writer.full:
            break
        try:
            rep = parse_report(path)
        except ValueError as exc:
            writer.skip(path, 0, path.stem, "unreadable XML", str(exc))
            continue
        labels = mesh_labels(rep["terms"], mapping)
        note = "MeSH major: " + ("; ".join(rep["terms"]) or "(none)")
        if not labels:
            writer.skip(path, 0, rep["id"], NO_MAPPED, note)
            continue
        if not rep["images"]:
            writer.skip(path, 0, rep["id"], "no image listed", "no <parentImage> element")
            continue
        text = compose_text(rep["sections"], sections)
        common = dict(text=text, labels=labels, file=str(path), note=note)
        if all_images:
            for image_id in rep["images"]:
                if writer.full:
                    break
                writer.add(Study(id=image_id, images=[image_dir / f"{image_id}.png"], patient_id=rep["id"], **common))
        else:
            writer.add(Study(id=rep["id"], images=[image_dir / f"{i}.png" for i in rep["images"]],
                             patient_id=rep["id"], **common))
    return writer.finish()
