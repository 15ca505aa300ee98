"""``fedmm data import``: convert a published dataset layout into a fedmm dataset folder.

``fedmm data import mimic-cxr SRC --out DST``, ``... openi SRC --out DST`` and
``... csv FILE.csv --out DST --id-col ... --image-col ... --label-col ...`` write
``DST/manifest.csv`` + ``DST/images/`` (see :mod:`fedmm.data.importing`); skipped
rows are counted by reason, listed (first 20) and all written to ``DST/import_issues.csv``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fedmm.cli.errors import new_app, usage_errors
from fedmm.data.csv_import import import_csv, parse_finding_cols
from fedmm.data.importing import ISSUES_NAME, LINK_MODES, ImportOptions, ImportSummary
from fedmm.data.labels import LabelPolicy, parse_class_list
from fedmm.data.mimic import LABELERS, import_mimic, parse_views
from fedmm.data.openi import import_openi
from fedmm.data.reports import parse_sections

app = new_app(help="Convert a published dataset layout (MIMIC-CXR-JPG, Open-i, any csv) into a dataset folder")
console = Console()
MAX_SHOWN = 20

Out = Annotated[Path, typer.Option("--out", help="Dataset folder to write (manifest.csv + images/)")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a manifest.csv and images/ already in --out")]
Link = Annotated[str, typer.Option("--link", help=f"How images get into --out: {' | '.join(LINK_MODES)} "
                                   "(hard falls back to copy)")]
Resize = Annotated[int, typer.Option("--resize", min=0, help="Write images as PNG with the longer side at most "
                                     "this many pixels (0 = keep files as they are)")]
KeepDicom = Annotated[bool, typer.Option("--keep-dicom", help="Link .dcm files as they are (the loader reads them) "
                                         "instead of writing windowed 8-bit PNGs")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Stop after writing this many rows")]
Site = Annotated[Optional[str], typer.Option("--site", help="Value of the site column ('' = none)")]
Classes = Annotated[Optional[str], typer.Option("--classes", help="Comma-separated classes to keep (others are "
                                                "ignored), e.g. 'no_finding,pneumonia,edema'; default all")]
Single = Annotated[bool, typer.Option("--single-label", help="Keep only rows with exactly one positive class and "
                                      "write a 'label' column (default: multi-label 'labels')")]
Uncertain = Annotated[str, typer.Option("--uncertain", help="Uncertain (-1) findings: zeros (U-Zeros) | ones "
                                        "(U-Ones) | ignore (left out; study dropped if nothing else)")]
Sections = Annotated[str, typer.Option("--sections", help="Report sections for the text: findings,impression")]
AllImages = Annotated[bool, typer.Option("--all-images", help="One row per image instead of one image per study")]


def _options(out: Path, overwrite: bool, link: str, resize: int, keep_dicom: bool, limit: int | None,
             site: str | None, classes: str | None, single_label: bool, uncertain: str) -> ImportOptions:
    with usage_errors(ValueError):
        policy = LabelPolicy(uncertain=uncertain.strip().lower(), single_label=single_label,
                             classes=parse_class_list(classes))
        opts = ImportOptions(out=out, overwrite=overwrite, link=link.strip().lower(), resize=resize,
                             keep_dicom=keep_dicom, limit=limit, site=site or None, policy=policy)
        opts.validate()
    return opts


def _sections(text: str) -> tuple[str, ...]:
    with usage_errors(ValueError):
        return parse_sections(text)


def _print_summary(summary: ImportSummary) -> None:
    kind = "multi-label 'labels'" if summary.multilabel else "single-label 'label'"
    console.print(f"wrote {summary.written} rows -> {summary.manifest} ({kind} column; "
                  f"{summary.no_text} without report text)", highlight=False, soft_wrap=True)
    if summary.classes:
        table = Table(title="rows per class")
        table.add_column("class")
        table.add_column("rows", justify="right")
        for name, n in sorted(summary.classes.items()):
            table.add_row(name, str(n))
        console.print(table)
    n_skipped = sum(summary.skipped.values())
    if not n_skipped:
        console.print("skipped 0 rows")
        return
    console.print(f"[yellow]skipped {n_skipped} rows[/yellow]")
    for reason, n in summary.skipped.most_common():
        console.print(f"  {n:6d}  {reason}", markup=False, highlight=False)
    for issue in summary.issues[:MAX_SHOWN]:
        console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
    if len(summary.issues) > MAX_SHOWN:
        console.print(f"  ... and {len(summary.issues) - MAX_SHOWN} more", highlight=False)
    console.print(f"all skipped rows: {summary.manifest.parent / ISSUES_NAME}", highlight=False, soft_wrap=True)


@app.command("mimic-cxr")
def mimic_cxr(
    src: Annotated[Path, typer.Argument(help="MIMIC-CXR-JPG root (metadata/chexpert/split csv + files/)")],
    out: Out,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="MIMIC-CXR reports root "
                                                    "(files/p10/p10000032/s50414267.txt); default SRC")] = None,
    labeler: Annotated[str, typer.Option("--labeler", help=f"Label table: {' | '.join(LABELERS)}")] = "chexpert",
    views: Annotated[str, typer.Option("--views", help="ViewPosition preference, '*' = any (e.g. PA,AP,*)")] = "PA,AP",
    all_images: AllImages = False,
    ext: Annotated[str, typer.Option("--ext", help="Image file extension: jpg (MIMIC-CXR-JPG) or dcm")] = "jpg",
    uncertain: Uncertain = "zeros",
    single_label: Single = False,
    classes: Classes = None,
    sections: Sections = "findings,impression",
    site: Site = "mimic-cxr",
    link: Link = "hard",
    resize: Resize = 0,
    keep_dicom: KeepDicom = False,
    limit: Limit = None,
    overwrite: Overwrite = False,
) -> None:
    """Import MIMIC-CXR-JPG (+ MIMIC-CXR reports): one image per study, CheXpert/NegBIO labels."""
    opts = _options(out, overwrite, link, resize, keep_dicom, limit, site, classes, single_label, uncertain)
    with usage_errors(ValueError):
        view_list = parse_views(views)
        if labeler not in LABELERS:
            raise ValueError(f"--labeler {labeler!r}: use one of {', '.join(LABELERS)}")
    with console.status("importing MIMIC-CXR"):
        summary = import_mimic(src, opts, reports=reports, labeler=labeler, views=view_list, all_images=all_images,
                               ext=ext, sections=_sections(sections))
    _print_summary(summary)


@app.command("openi")
def openi(
    src: Annotated[Path, typer.Argument(help="Open-i folder with ecgen-radiology/ and NLMCXR_png/")],
    out: Out,
    reports: Annotated[Optional[Path], typer.Option("--reports", help="Folder of report .xml files")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of .png images")] = None,
    mesh_map: Annotated[Optional[Path], typer.Option("--mesh-map", help="csv 'term,class' extending the "
                                                     "MeSH-to-class map (empty class = drop the term)")] = None,
    all_images: AllImages = False,
    single_label: Single = False,
    classes: Classes = None,
    sections: Sections = "findings,impression",
    site: Site = "openi",
    link: Link = "hard",
    resize: Resize = 0,
    limit: Limit = None,
    overwrite: Overwrite = False,
) -> None:
    """Import IU X-ray / Open-i: report XML + PNG images, labels from the MeSH major terms."""
    opts = _options(out, overwrite, link, resize, False, limit, site, classes, single_label, "zeros")
    with console.status("importing Open-i"):
        summary = import_openi(src, opts, reports=reports, images=images, mesh_map=mesh_map, all_images=all_images,
                               sections=_sections(sections))
    _print_summary(summary)


@app.command("csv")
def csv_table(
    src: Annotated[Path, typer.Argument(help="csv file (may be .gz), one row per sample")],
    out: Out,
    id_col: Annotated[str, typer.Option("--id-col", help="Column with the unique row id")] = "id",
    image_col: Annotated[Optional[str], typer.Option("--image-col", help="Column with the image path")] = "image",
    text_col: Annotated[Optional[str], typer.Option("--text-col", help="Column with the report text")] = None,
    text_from_file: Annotated[bool, typer.Option("--text-from-file", help="--text-col holds report file "
                                                 "paths")] = False,
    sections: Annotated[Optional[str], typer.Option("--sections", help="Keep only these report sections "
                                                    "(findings,impression); default the whole text")] = None,
    label_col: Annotated[Optional[str], typer.Option("--label-col", help="Column with the class name")] = None,
    label_sep: Annotated[Optional[str], typer.Option("--label-sep", help="Separator of several classes "
                                                     "in --label-col (e.g. '|')")] = None,
    finding_cols: Annotated[Optional[str], typer.Option("--finding-cols", help="Comma-separated 1/0/-1 finding "
                                                        "columns, or 'chexpert' for the 14 CheXpert ones")] = None,
    split_col: Annotated[Optional[str], typer.Option("--split-col", help="Column with train/val/test")] = None,
    patient_col: Annotated[Optional[str], typer.Option("--patient-col", help="Column with the patient id")] = None,
    site_col: Annotated[Optional[str], typer.Option("--site-col", help="Column with the site")] = None,
    image_root: Annotated[Optional[Path], typer.Option("--image-root", help="Folder the image paths are "
                                                       "relative to; default the csv's folder")] = None,
    delimiter: Annotated[str, typer.Option("--delimiter", help="Field separator")] = ",",
    uncertain: Uncertain = "zeros",
    single_label: Single = False,
    classes: Classes = None,
    site: Site = None,
    link: Link = "hard",
    resize: Resize = 0,
    keep_dicom: KeepDicom = False,
    limit: Limit = None,
    overwrite: Overwrite = False,
) -> None:
    """Import any csv: you name the id / image / text / label columns."""
    opts = _options(out, overwrite, link, resize, keep_dicom, limit, site, classes, single_label, uncertain)
    with usage_errors(ValueError):
        cols = parse_finding_cols(finding_cols)
        if (label_col is None) == (cols is None):
            raise ValueError("name the labels with exactly one of --label-col or --finding-cols")
        if len(delimiter) != 1:
            raise ValueError("--delimiter must be one character")
        section_list = parse_sections(sections) if sections else None
    with console.status("importing csv"):
        summary = import_csv(src, opts, id_col=id_col, image_col=image_col or None, text_col=text_col,
                             label_col=label_col, label_sep=label_sep, finding_cols=cols, split_col=split_col,
                             patient_col=patient_col, site_col=site_col, image_root=image_root,
                             text_from_file=text_from_file, sections=section_list, delimiter=delimiter)
    _print_summary(summary)
