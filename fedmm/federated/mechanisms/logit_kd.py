"""Modality-aware logit distillation on the public set.

Client half: every client returns its logits on this round's public rows for each
modality view it can run (a multimodal client: ``full``, ``image_only`` and
``text_only``; an image-only client: ``image_only``). A student learns from the soft
labels of the view it has itself: a text-only student from the teachers' text-only
predictions, not from what they predict with the image in hand.

Server half: per view, the clients whose validation score on that view is at or above
the median of that view's candidates are its teachers; their softened probabilities,
weighted by score, are the view's soft labels for the next round. Students are the
clients below the median of their own view.
"""
from __future__ import annotations

import numpy as np
import torch

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


def select_teachers(uploads: list, threshold: float, temperature: float):
    """Per view: teachers at or above the median score (``threshold`` if >= 0), s-weighted soft labels.

    Returns (teachers {view: [names]}, students [names], probs {view: [M, C]}).
    """
    teachers, probs, students = {}, {}, []
    for view in VIEWS:
        cands = [u for u in uploads if f"public/{view}_logits" in u.arrays]
        if not cands:
            continue
        s = np.array([view_score(u, view) for u in cands])
        thr = float(np.median(s)) if threshold < 0 else threshold
        chosen = [(u, sk) for u, sk in zip(cands, s) if sk >= thr]
        w = np.array([max(sk, 1e-6) for _, sk in chosen])
        soft = sum(wk * torch.softmax(torch.from_numpy(u.arrays[f"public/{view}_logits"]) / temperature, -1).numpy()
                   for wk, (u, _) in zip(w, chosen)) / w.sum()
        teachers[view], probs[view] = [u.meta["client"] for u, _ in chosen], soft.astype(np.float32)
        students += [u.meta["client"] for u, sk in zip(cands, s)
                     if sk < thr and own_view(u.meta.get("modality", "multimodal")) == view]
    return teachers, students, probs
