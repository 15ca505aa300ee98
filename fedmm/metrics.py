"""Classification metrics on numpy arrays (no sklearn dependency)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _binary_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks handle ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str],
                           multilabel: bool = False) -> dict:
    """accuracy, macro_f1, macro_auroc (one-vs-rest), per-class recall and per-class AUROC.

    logits [N, C]; labels [N] int (single-label) or [N, C] {0,1} (multi-label: a
    prediction is logit > 0, i.e. sigmoid >= 0.5; accuracy = mean per-label accuracy).
    Classes absent from ``labels`` are left out of the macro averages and of
    ``per_class_recall``; ``per_class_auroc`` lists the classes with both positive and
    negative rows (the ones ``macro_auroc`` averages).
    """
    C = len(classes)
    if multilabel:
        truth = labels.astype(bool)  # [N, C]
        pred = logits > 0
    else:
        truth = np.eye(C, dtype=bool)[labels]  # [N, C]
        pred = np.eye(C, dtype=bool)[logits.argmax(1)]
    tp = (pred & truth).sum(0)
    fp = (pred & ~truth).sum(0)
    fn = (~pred & truth).sum(0)
    present = truth.sum(0) > 0
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    recall = np.where(present, tp / np.maximum(tp + fn, 1), np.nan)
    aurocs = [_binary_auroc(logits[:, c], truth[:, c]) for c in range(C)]
    accuracy = float((pred == truth).mean()) if multilabel else float((logits.argmax(1) == labels).mean())
    valid_auc = [a for a in aurocs if not np.isnan(a)]
    return {
        "accuracy": accuracy,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_auroc": float(np.mean(valid_auc)) if valid_auc else float("nan"),
        "per_class_recall": {c: float(r) for c, r in zip(classes, recall) if not np.isnan(r)},
        "per_class_auroc": {c: float(a) for c, a in zip(classes, aurocs) if not np.isnan(a)},
    }


def mean_metrics(items: list[dict]) -> dict:
    """Average metric dicts (nested per-class dicts averaged key-wise, each key over the
    items that have it); empty -> {}."""
    if not items:
        return {}
    keys = list(dict.fromkeys(k for it in items for k in it))
    out = {}
    for key in keys:
        have = [it[key] for it in items if key in it]
        if isinstance(have[0], dict):
            out[key] = mean_metrics(have)
        else:
            out[key] = float(np.nanmean(have))
    return out
