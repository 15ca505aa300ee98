"""Missing-modality patterns of the federated layout: structural, client-level and sample-level.

Used by :mod:`fedmm.data.partition` after the rows have been assigned to clients.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .manifest import Record


def client_kinds(cfg, n: int, rng: np.random.Generator) -> list[str]:
    """Client type of each of ``n`` clients under ``cfg.mode`` (a :class:`PartitionConfig`)."""
    if cfg.mode == "structural":
        return (["image_only"] * cfg.n_image_only + ["text_only"] * cfg.n_text_only
                + ["multimodal"] * (n - cfg.n_image_only - cfg.n_text_only))
    if cfg.mode == "client":
        kinds = []
        for _ in range(n):
            drop_img, drop_txt, keep_img = rng.random(3)
            d_i, d_t = drop_img < cfg.p_drop_modality, drop_txt < cfg.p_drop_modality
            if d_i and d_t:   # never both: keep one of the two at random
                d_i, d_t = keep_img >= 0.5, keep_img < 0.5
            kinds.append("text_only" if d_i else "image_only" if d_t else "multimodal")
        return kinds
    return ["mixed"] * n   # sample and site modes (site: replaced by what the data holds)


def apply_modality(rec: Record, kind: str) -> Record | None:
    """``rec`` with the modality a client of ``kind`` lacks removed (None when nothing is left)."""
    if kind == "image_only":
        rec = dataclasses.replace(rec, text=None)
    elif kind == "text_only":
        rec = dataclasses.replace(rec, image=None)
    return rec if (rec.image is not None or rec.text is not None) else None


def sample_drop(recs: list[Record], probs, floor: int, rng: np.random.Generator) -> list[Record]:
    """Sample-level missingness: each row loses image, text or both (= removed)."""
    p_img, p_txt, p_both = probs
    draws = rng.random(len(recs))
    out, left = [], len(recs)
    for rec, d in zip(recs, draws):
        if d < p_img:
            rec = dataclasses.replace(rec, image=None)
        elif d < p_img + p_txt:
            rec = dataclasses.replace(rec, text=None)
        elif d < p_img + p_txt + p_both and left > floor:
            rec = dataclasses.replace(rec, image=None, text=None)
        if rec.image is None and rec.text is None:
            left -= 1
            continue
        out.append(rec)
    return out


def observed_kind(recs: list[Record]) -> str:
    """Client type that the rows actually hold (used in site mode)."""
    has_i = {r.image is not None for r in recs}
    has_t = {r.text is not None for r in recs}
    if has_i == {True} and has_t == {True}:
        return "multimodal"
    if has_i == {True} and has_t == {False}:
        return "image_only"
    if has_i == {False} and has_t == {True}:
        return "text_only"
    return "mixed"
