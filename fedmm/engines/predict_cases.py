"""New cases for ``fedmm predict``: read them (a manifest or single files), score them with a
client's deployed model (:class:`fedmm.engines.predict.Predictor`), write CSV or JSON.

Cases are encoded as training encoded its data (:func:`fedmm.data.encode.encode_split` with
the run's tokenizer, image size and text length; modalities the run hid stay hidden) and
scored by :func:`fedmm.federated.train.predict` on the view the client deploys. A bad row
(unusable image, no image and no report, empty or unprintable id, a modality the client's
model cannot read) is reported as ``file:row: reason`` and skipped; the others are scored.

Output columns: ``id``, ``predicted_label``, ``p_<class>`` per class (softmax; with
multi-label data independent sigmoids, and ``predicted_label`` joins the classes at
p >= 0.5 with ``|``), ``modalities`` (image | text | both: what the model read),
``surrogate`` (true when the global vectors' surrogates filled the missing modality),
and ``label`` (the manifest's label, when it has any).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedmm.data.encode import encode_split, hide_modality
from fedmm.data.manifest import LABEL_SEP, MANIFEST_NAME, ManifestData, Record, RowIssue, load_manifest
from fedmm.engines.predict import Predictor
from fedmm.federated.train import VIEWS, predict, view_rows
from fedmm.io import atomic_write_bytes, write_json

ID_MAX = 200
FORMATS = (".csv", ".json")


@dataclass
class Cases:
    """Cases to score; ``source`` is what their issues name as the file (the manifest, or the command line)."""

    data: ManifestData
    source: str


@dataclass
class Predictions:
    """One dict per scored case (keys: ``columns``) and the rows skipped, with their reasons."""

    rows: list[dict]
    skipped: list[RowIssue]
    columns: list[str]


def output_format(path: str | Path) -> str:
    """``.csv`` or ``.json`` from the output file's name; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out {path}: name a .csv or .json file (the extension picks the format)")
    return suffix


def read_manifest_cases(path: str | Path) -> Cases:
    """Cases of a dataset folder (its ``manifest.csv``; labels optional, image paths relative to it)."""
    path = Path(path)
    if path.is_file():
        if path.name != MANIFEST_NAME:
            raise ValueError(f"--manifest {path}: give the dataset folder holding {MANIFEST_NAME} (image paths are "
                             f"relative to it), or that {MANIFEST_NAME} itself")
        path = path.parent
    elif not path.is_dir():
        raise FileNotFoundError(f"--manifest {path}: no such folder or file")
    data = load_manifest(path, require_labels=False)
    return Cases(data, str(data.root / MANIFEST_NAME))


def single_case(image: str | Path | None, report: str | None, case_id: str | None = None) -> Cases:
    """One case from the command line: an image file and/or a report (either may be absent)."""
    text = report.strip() if report else ""
    if image is None and not text:
        raise ValueError("give --image and/or --report (or --manifest)")
    img = Path(os.path.abspath(image)) if image is not None else None
    if img is not None and not img.is_file():
        raise FileNotFoundError(f"--image {image}: no such file")
    cid = case_id if case_id is not None else img.stem if img is not None else "case"
    rec = Record(id=cid, image=img, text=text or None, labels=(), split=None, patient_id=cid, site=None)
    return Cases(ManifestData(Path.cwd(), [rec], [], False, [], {cid: 1}), "command line")


def _skip_reason(reason: str) -> str:
    """A loader/encoder issue that degraded a row, restated as skipping it (no prediction from part of a case)."""
    for tail in ("; image dropped", "; no modality left; row dropped"):
        if reason.endswith(tail):
            return reason[: -len(tail)] + "; row skipped"
    return reason


def _id_problem(rid: str) -> str | None:
    if not rid.strip():
        return "empty id; row skipped"
    if len(rid) > ID_MAX:
        return f"id of {len(rid)} characters (at most {ID_MAX}); row skipped"
    if not rid.isprintable():
        return f"id {rid!r} holds control characters (tab, newline, ...); row skipped"
    return None


def _unreadable(pred: Predictor, has_img: bool) -> str:
    have, other = ("an image", "reports") if has_img else ("a report", "images")
    hidden = pred.cfg.data.modalities
    if hidden != "both":
        return f"only {have}, and the run hid {other} everywhere (data.modalities={hidden}); row skipped"
    kind = "image-only" if pred.view == "image_only" else "text-only"
    return f"only {have}, and {pred.client} deploys a {kind} model (it never trained on {other[:-1]}s); row skipped"


def surrogate_filled(pred: Predictor, used_img: np.ndarray, used_txt: np.ndarray) -> np.ndarray:
    """Bool [N]: the missing modality was filled by surrogate tokens (global vectors with pairs, and
    ``model.surrogate_fill`` allowing it), not by the learned missing token; as FedMMModel.classify."""
    if pred.gv is None or len(pred.gv.pair_img) == 0:
        return np.zeros(len(used_img), bool)
    fill = pred.model.cfg.surrogate_fill
    fill_img, fill_txt = fill in ("both", "image"), fill in ("both", "text")
    return (~used_img & fill_img) | (~used_txt & fill_txt)


def _probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """logits [N, C] -> probabilities [N, C] (float64: softmax rows sum to 1)."""
    t = torch.from_numpy(logits).double()  # [N, C]
    return (torch.sigmoid(t) if multilabel else torch.softmax(t, dim=-1)).numpy()


def predict_cases(pred: Predictor, cases: Cases) -> Predictions:
    """Score every usable case with ``pred``'s model; bad rows go to ``skipped`` (file, row, reason)."""
    data, cfg = cases.data, pred.cfg
    skipped = [RowIssue(cases.source, i.row, i.reason) for i in data.issues]
    flagged = {i.row for i in data.issues}
    keep: list[Record] = []
    for rec in data.records:
        line = data.lines.get(rec.id, 0)
        if line in flagged:   # the loader dropped its image
            skipped = [RowIssue(i.file, i.row, _skip_reason(i.reason)) if i.row == line else i for i in skipped]
        elif (why := _id_problem(rec.id)) is not None:
            skipped.append(RowIssue(cases.source, line, why))
        else:
            keep.append(rec)
    with_labels = any(rec.labels for rec in data.records)
    columns = ["id", "predicted_label", *[f"p_{c}" for c in pred.classes], "modalities", "surrogate",
               *(["label"] if with_labels else [])]
    if not keep:
        return Predictions([], sorted(skipped, key=lambda i: i.row), columns)
    sub = ManifestData(data.root, keep, data.classes, data.multilabel, [], data.lines)
    split = encode_split(sub, pred.tokenizer, cfg.data.image_size, cfg.data.max_len)   # rows: split.ids
    line_of = {rec.id: data.lines.get(rec.id, 0) for rec in keep}
    undecodable = {i.row for i in sub.issues}
    skipped += [RowIssue(cases.source, i.row, _skip_reason(i.reason)) for i in sub.issues]
    had_img, had_txt = split.has_image.clone(), split.has_text.clone()  # [N] bool, before hiding
    split = hide_modality(split, cfg.data.modalities, drop_empty=False)
    scorable = view_rows(split, pred.view)   # [N] bool
    rows = []
    for k, rid in enumerate(split.ids):
        if line_of[rid] in undecodable:
            continue
        if not scorable[k]:
            skipped.append(RowIssue(cases.source, line_of[rid], _unreadable(pred, bool(had_img[k]))))
            continue
        rows.append(k)
    if not rows:
        return Predictions([], sorted(skipped, key=lambda i: i.row), columns)
    sel = split.subset(rows)
    logits = predict(pred.model, sel, pred.device, pred.gv, (pred.view,),
                     cfg.train.eval_batch_size)[pred.view]  # [n, C]
    probs = _probabilities(logits, pred.multilabel)  # [n, C]
    use_img, use_txt = VIEWS[pred.view]
    used_img, used_txt = (sel.has_image & use_img).numpy(), (sel.has_text & use_txt).numpy()  # [n] bool
    surrogate = surrogate_filled(pred, used_img, used_txt)  # [n] bool
    labels = {rec.id: LABEL_SEP.join(rec.labels) for rec in keep}
    out = []
    for j, rid in enumerate(sel.ids):
        p = probs[j]
        if pred.multilabel:
            label = LABEL_SEP.join(c for c, q in zip(pred.classes, p) if q >= 0.5)
        else:
            label = pred.classes[int(p.argmax())]
        row = {"id": rid, "predicted_label": label, **{f"p_{c}": round(float(q), 6) for c, q in zip(pred.classes, p)},
               "modalities": "both" if used_img[j] and used_txt[j] else "image" if used_img[j] else "text",
               "surrogate": bool(surrogate[j])}
        if with_labels:
            row["label"] = labels[rid]
        out.append(row)
    return Predictions(out, sorted(skipped, key=lambda i: i.row), columns)


def write_predictions(path: str | Path, preds: Predictions, pred: Predictor) -> Path:
    """Write the predictions as CSV (one row per case) or JSON (cases, skipped rows, model facts)."""
    path = Path(path)
    if output_format(path) == ".csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [preds.columns] + [[_cell(row[c]) for c in preds.columns] for row in preds.rows])
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
        return path
    write_json(path, {"model": pred.source, "client": pred.client, "view": pred.view, "classes": pred.classes,
                      "multilabel": pred.multilabel, "columns": preds.columns, "predictions": preds.rows,
                      "skipped": [{"file": i.file, "row": i.row, "reason": i.reason} for i in preds.skipped]})
    return path


def _cell(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
