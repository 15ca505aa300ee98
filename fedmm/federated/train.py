"""The one local training loop and batched inference; every strategy uses these."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.data.encode import EncodedSplit
from fedmm.models.head import GROUPS, param_group
from fedmm.models.model import FedMMModel
from fedmm.models.surrogate import GlobalVectors

BATCH_KEYS = ("images", "input_ids", "attention_mask", "has_image", "has_text", "labels")


def make_batch(split: EncodedSplit, idx: torch.Tensor, device) -> dict:
    return {k: getattr(split, k)[idx].to(device) for k in BATCH_KEYS}


@dataclass
class Teacher:
    """Soft labels for public samples: public split, row indices [M], probabilities [M, C]."""

    public: EncodedSplit
    index: np.ndarray
    probs: np.ndarray


@dataclass
class TrainResult:
    loss: float
    steps: int
    trained_groups: set = field(default_factory=set)
    pooled_image: np.ndarray | None = None   # [Ni, d] vectors of the last epoch (present images)
    pooled_text: np.ndarray | None = None    # [Nt, d]
    labels_image: np.ndarray | None = None   # labels of those rows
    labels_text: np.ndarray | None = None


def _task_loss(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) with the student softened by T (teacher probs already softened)."""
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_p, teacher_probs, reduction="batchmean")


def train_local(model: FedMMModel, train: EncodedSplit, tcfg, *, generator: torch.Generator, device,
                multilabel: bool = False, gv: GlobalVectors | None = None, modality_dropout: float = 0.0,
                teacher: Teacher | None = None, prox_ref: dict[str, torch.Tensor] | None = None,
                prox_mu: float = 0.0) -> TrainResult:
    """E epochs of CE (+ KD on public batches, + proximal term); returns stats and last-epoch vectors."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg.lr,
                            weight_decay=tcfg.weight_decay)
    head_params = dict(model.head.named_parameters())
    result, total = TrainResult(0.0, 0), 0.0
    for epoch in range(tcfg.local_epochs):
        last = epoch == tcfg.local_epochs - 1
        order = torch.randperm(len(train), generator=generator)
        pooled = {"image": [], "text": [], "yi": [], "yt": []}
        for start in range(0, len(order), tcfg.batch_size):
            batch = make_batch(train, order[start:start + tcfg.batch_size], device)
            out = model(batch, gv, modality_dropout, generator)
            loss = _task_loss(out.logits, batch["labels"], multilabel)
            if teacher is not None and len(teacher.index):
                pick = torch.randint(len(teacher.index), (tcfg.kd_batch_size,), generator=generator).numpy()
                pub = make_batch(teacher.public, torch.as_tensor(teacher.index[pick]), device)
                pub_out = model(pub, gv)
                target = torch.as_tensor(teacher.probs[pick], device=device)
                loss = loss + tcfg.kd_weight * kd_loss(pub_out.logits, target, tcfg.kd_temperature)
            if prox_ref is not None and prox_mu > 0:
                prox = sum(((head_params[k] - v) ** 2).sum() for k, v in prox_ref.items() if k in head_params)
                loss = loss + prox_mu / 2 * prox
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for name, p in head_params.items():
                group = param_group(name)
                if group not in result.trained_groups and p.grad is not None and bool(p.grad.any()):
                    result.trained_groups.add(group)
            opt.step()
            total += float(loss.detach())
            result.steps += 1
            if last:
                pooled["image"].append(out.pooled_image[out.has_image].detach().cpu())
                pooled["yi"].append(batch["labels"][out.has_image].cpu())
                pooled["text"].append(out.pooled_text[out.has_text].detach().cpu())
                pooled["yt"].append(batch["labels"][out.has_text].cpu())
    result.loss = total / max(result.steps, 1)
    result.trained_groups &= set(GROUPS)
    cat = lambda xs: torch.cat(xs).numpy() if xs else None  # noqa: E731
    result.pooled_image, result.pooled_text = cat(pooled["image"]), cat(pooled["text"])
    result.labels_image, result.labels_text = cat(pooled["yi"]), cat(pooled["yt"])
    return result


VIEWS = {"full": (True, True), "image_only": (True, False), "text_only": (False, True)}


@torch.no_grad()
def predict(model: FedMMModel, split: EncodedSplit, device, gv: GlobalVectors | None = None,
            views=("full",), batch_size: int = 256) -> dict[str, np.ndarray]:
    """Logits [N, C] per modality view; encoders run once per batch, the head once per view.

    A view hides modalities (``image_only`` hides text); rows left with no modality
    in a view are dropped from that view's output (``predict`` returns only the
    rows it could score; see :func:`view_rows`).
    """
    model.eval()
    outs = {v: [] for v in views}
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        batch = make_batch(split, idx, device)
        has_img, has_txt = batch["has_image"].bool(), batch["has_text"].bool()
        enc = model.encode(batch, has_img, has_txt)
        for v in views:
            use_img, use_txt = VIEWS[v]
            vi, vt = has_img & use_img, has_txt & use_txt
            keep = vi | vt
            if keep.any():
                logits = model.classify(enc, vi, vt, gv).logits[keep]
                outs[v].append(logits.float().cpu())
    return {v: torch.cat(o).numpy() if o else np.zeros((0, 0), np.float32) for v, o in outs.items()}


def view_rows(split: EncodedSplit, view: str) -> np.ndarray:
    """Boolean [N]: rows that keep at least one modality under ``view``."""
    use_img, use_txt = VIEWS[view]
    return ((split.has_image & use_img) | (split.has_text & use_txt)).numpy()
