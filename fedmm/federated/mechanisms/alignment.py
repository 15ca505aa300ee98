"""Cross-modal alignment (client half only): symmetric InfoNCE between the pooled adapter
vectors of an image and its own report.

Surrogate tokens are looked up from the present modality's pooled vector in the other
modality's space (:func:`fedmm.models.surrogate.surrogate_tokens`); without an
objective that puts a report and its image near each other that lookup is arbitrary.
The term is computed on every row of a batch that holds both modalities (before
modality dropout hides one from the head), in the head's alignment space
(``SharedHead.project``, one linear map per modality, CLIP-style): pulling the pooled
vectors themselves together would erase what only one modality knows (pneumonia and
atelectasis have the same image and differ only in the report). The server pairs
image and text centers by their cosine in that space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedmm.models.head import masked_mean


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a [N, d] and row i of b [N, d] are the positive pair."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # [N, N]
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class AlignmentTerm:
    """``weight * InfoNCE(pooled image, pooled text)`` on the batch's paired rows."""

    def __init__(self, weight: float, temperature: float) -> None:
        self.weight, self.temperature = weight, temperature

    def __call__(self, model, batch: dict, out, gv, generator) -> torch.Tensor | None:
        both = batch["has_image"].bool() & batch["has_text"].bool()
        if out.enc is None or int(both.sum()) < 2:
            return None
        img = out.enc.image[both].mean(1)  # [N, d] every image token is valid
        txt = masked_mean(out.enc.text[both], out.enc.text_mask[both])  # [N, d]
        head = model.head
        return self.weight * info_nce(head.project(img, "image"), head.project(txt, "text"), self.temperature)
