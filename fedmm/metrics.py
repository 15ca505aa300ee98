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
    """accuracy, macro_f1, macro_auroc (one-vs-rest) and per-class recall.

    logits [N, C]; labels [N] int (single-label) or [N, C] {0,1} (multi-label,
    accuracy = mean per-label accuracy at threshold 0.5). Classes absent from
    ``labels`` are left out of the macro averages.
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
    }


def mean_metrics(items: list[dict]) -> dict:
    """Average metric dicts (nested per-class dicts averaged key-wise); empty -> {}."""
    if not items:
        return {}
    out = {}
    for key in items[0]:
        if isinstance(items[0][key], dict):
            out[key] = mean_metrics([it[key] for it in items if key in it])
        else:
            out[key] = float(np.nanmean([it[key] for it in items]))
    return out
