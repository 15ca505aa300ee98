"""Missing-modality views as training objectives (client half only).

A model trained on image+report pairs leans on the report (the easier modality) and its
image pathway stays weak: with a report missing at test time it fails. Random modality
dropout trains that pathway on a fraction of the rows. This term trains it on every
paired row: besides the full view, each paired row is also classified with its report
hidden (image + surrogate / missing text) and with its image hidden, and both
cross-entropies are added with ``weight``. The encoders run once per batch; only the
head runs again per view.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedmm.models.model import fusion_path_loss


class MissingViewsTerm:
    """``weight * (CE(image-only view) + CE(text-only view))`` on the batch's paired rows."""

    def __init__(self, weight: float, logit_adjust: torch.Tensor | None = None, multilabel: bool = False) -> None:
        self.weight, self.adjust, self.multilabel = weight, logit_adjust, multilabel

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        if self.adjust is not None:
            logits = logits + self.adjust.to(logits.device)
        return F.cross_entropy(logits, labels)

    def __call__(self, model, batch: dict, out, gv, generator) -> torch.Tensor | None:
        both = batch["has_image"].bool() & batch["has_text"].bool()
        if out.enc is None or not bool(both.any()):
            return None
        none = torch.zeros_like(both)
        loss = 0.0
        labels = batch["labels"]
        for has_img, has_txt in ((both, none), (none, both)):
            view = model.classify(out.enc, has_img, has_txt, gv)
            loss = loss + self._loss(view.logits[both], labels[both])  # [Nb, C]
            fused = fusion_path_loss(view, both, model.cfg.unimodal_fusion_loss,
                                     lambda z, rows: self._loss(z, labels[rows]))
            if fused is not None:
                loss = loss + fused
        return self.weight * loss
