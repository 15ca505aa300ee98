"""Modality-aware logit distillation on the public set.

Client half: every client returns its logits on this round's public rows for each
modality view it can run (a multimodal client: ``full``, ``image_only`` and
``text_only``; an image-only client: ``image_only``). A student learns from the soft
labels of the view it has itself: a text-only student from the teachers' text-only
predictions, not from what they predict with the image in hand.

Server half: per view, the clients whose validation score on that view is at or above
the median of that view's eligible candidates are its teachers; their softened
probabilities, weighted by score, are the view's soft labels for the next round.
Students are the clients below the median of their own view. Scores are claims, so two
kinds of candidate are not eligible (each exclusion is a ``teacher`` event of
:mod:`~fedmm.federated.mechanisms.claims`): a client whose size claims the round
found implausible (``untrusted``), and a client whose softened public probabilities are
farther (mean KL(consensus || client)) from the per-row median of the view's candidates
than ``median + K_LOGIT x scale`` of the round's distances (checked with at least
``MIN_CONSENSUS`` candidates). Both learn as students of their own view instead.
"""
from __future__ import annotations

import numpy as np
import torch

from fedmm.federated.mechanisms.claims import (K_LOGIT, KL_FLOOR, MIN_CONSENSUS, consensus_distances, event,
                                               upper_outliers)
from fedmm.federated.train import VIEWS, kd_loss, make_batch, own_view, predict_rows


# ---- client half ---------------------------------------------------------------------------------

def public_logits(model, public, index: np.ndarray, views, gv, device, batch_size: int) -> dict[str, np.ndarray]:
    """{"public/<view>_logits": [M, C]} on public rows ``index`` (rows a view cannot score: zeros)."""
    rows = public.subset(torch.as_tensor(index))
    return {f"public/{v}_logits": logits.astype(np.float32)
            for v, logits in predict_rows(model, rows, device, gv, views, batch_size).items()}


class LogitKD:
    """``weight * T^2 * KL(teacher || student)`` on a random public batch each step."""

    def __init__(self, public, index: np.ndarray, probs: np.ndarray, weight: float, temperature: float,
                 batch_size: int) -> None:
        self.public, self.index, self.probs = public, index, probs
        self.weight, self.temperature, self.batch_size = weight, temperature, batch_size

    def __call__(self, model, batch: dict, out, gv, generator) -> torch.Tensor:
        pick = torch.randint(len(self.index), (self.batch_size,), generator=generator).numpy()
        pub = make_batch(self.public, torch.as_tensor(self.index[pick]), out.logits.device)
        target = torch.as_tensor(self.probs[pick], device=out.logits.device)
        return self.weight * kd_loss(model(pub, gv).logits, target, self.temperature)


def student_term(broadcast, data, tcfg) -> LogitKD | None:
    """The KD term of ``data``'s client if the broadcast names it a student of its view."""
    view = own_view(data.modality)
    probs = broadcast.arrays.get(f"teacher/{view}_probs")
    if probs is None or data.name not in broadcast.meta.get("students", []) or not len(probs):
        return None
    return LogitKD(data.public_view(), broadcast.arrays["teacher/index"], probs, tcfg.kd_weight,
                   tcfg.kd_temperature, tcfg.kd_batch_size)


# ---- server half ---------------------------------------------------------------------------------

def view_score(upload, view: str) -> float:
    """A client's validation score on ``view`` (its overall score when it reports none per view)."""
    return float(upload.meta.get("val_scores", {}).get(view, upload.meta["val_score"]))


def choose_teachers(uploads: list, threshold: float, temperature: float, untrusted: dict[str, str] | None = None):
    """Per view: eligible teachers at or above the median score (``threshold`` if >= 0), s-weighted soft labels.

    ``untrusted``: client -> reason (:func:`~fedmm.federated.mechanisms.claims.check_sizes`).
    Returns (teachers {view: [names]}, students [names], probs {view: [M, C]}, events [dict]).
    """
    untrusted = untrusted or {}
    teachers, probs, students, events = {}, {}, [], []
    for view in VIEWS:
        cands = [u for u in uploads if f"public/{view}_logits" in u.arrays]
        if not cands:
            continue
        names = [u.meta["client"] for u in cands]
        s = np.array([view_score(u, view) for u in cands])
        p = [torch.softmax(torch.from_numpy(u.arrays[f"public/{view}_logits"]) / temperature, -1).numpy()
             for u in cands]                                                      # each [M, C]
        dist = consensus_distances(np.stack(p)) if p[0].size else np.zeros(len(cands))   # [N]
        far, bound = upper_outliers(dist, K_LOGIT, KL_FLOOR, MIN_CONSENSUS)
        eligible = np.ones(len(cands), bool)
        for i, name in enumerate(names):
            if name in untrusted:
                eligible[i] = False
                events.append(event(name, "teacher", f"{view}: untrusted ({untrusted[name]})"))
            elif far[i]:
                eligible[i] = False
                events.append(event(name, "teacher", f"{view}: public probabilities {dist[i]:.3f} nats (mean "
                                                     f"KL) from the consensus, above {bound:.3f}"))
        thr = (float(np.median(s[eligible])) if eligible.any() else np.inf) if threshold < 0 else threshold
        chosen = eligible & (s >= thr)                                            # [N] bool
        students += [n for n, u, c in zip(names, cands, chosen)
                     if not c and own_view(u.meta.get("modality", "multimodal")) == view]
        teachers[view] = [n for n, c in zip(names, chosen) if c]
        if chosen.any():
            w = np.array([max(sk, 1e-6) for sk in s[chosen]])
            soft = sum(wk * pk for wk, pk in zip(w, [pk for pk, c in zip(p, chosen) if c])) / w.sum()   # [M, C]
            probs[view] = soft.astype(np.float32)
    return teachers, students, probs, events


def select_teachers(uploads: list, threshold: float, temperature: float, untrusted: dict[str, str] | None = None):
    """:func:`choose_teachers` without the events: (teachers, students, probs)."""
    return choose_teachers(uploads, threshold, temperature, untrusted)[:3]
