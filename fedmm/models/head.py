"""The federated (shared) part of the model: adapters, gated cross-attention, FusionClassifier.

Parameter groups are the unit of federation: a client uploads only the groups
it trained, and the server averages each group over the clients that trained it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from fedmm.ops import gated_cross_attention

GROUPS = ("image_adapter", "text_adapter", "missing_image", "missing_text", "fusion", "classifier", "align",
          "unimodal")
UNIMODAL_HEADS = ("none", "image", "text", "both", "late")


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: tokens [B, L, d], mask [B, L] bool -> [B, d] (zeros if none valid)."""
    w = mask.to(tokens.dtype).unsqueeze(-1)  # [B, L, 1]
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


class Adapter(nn.Module):
    """Linear(C -> d) + LayerNorm applied per token."""

    def __init__(self, in_dim: int, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(tokens))  # [B, L, d]


class GatedCrossAttention(nn.Module):
    """Parameters of one direction of :func:`fedmm.ops.gated_cross_attention`."""

    def __init__(self, d: int, heads: int, backend: str = "auto") -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"heads={heads} must divide d={d}")
        self.heads, self.backend = heads, backend
        std = 1.0 / math.sqrt(d)
        for name in ("wq", "wk", "wv", "wo", "wg", "ug"):
            setattr(self, name, nn.Parameter(torch.randn(d, d) * std))
        self.bg = nn.Parameter(torch.zeros(d))

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        return gated_cross_attention(xq, xkv, kv_mask, self.wq, self.wk, self.wv, self.wo, self.wg, self.ug,
                                     self.bg, self.heads, backend=self.backend)  # [B, Lq, d]


class FusionClassifier(nn.Module):
    """MLP on the integrated representation R [B, in_dim] (default 2d) -> logits [B, C]."""

    def __init__(self, d: int, n_classes: int, hidden: int = 256, dropout: float = 0.1, in_dim: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim or 2 * d, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


class SharedHead(nn.Module):
    """Everything the federation shares; the server holds one of these (no encoders)."""

    def __init__(self, image_dim: int, text_dim: int, n_classes: int, d: int = 128, heads: int = 4,
                 fusion: str = "gated", attention_backend: str = "auto", unimodal: str = "none") -> None:
        super().__init__()
        if fusion not in ("gated", "concat"):
            raise ValueError(f"fusion must be 'gated' or 'concat', got {fusion!r}")
        if unimodal not in UNIMODAL_HEADS:
            raise ValueError(f"model.unimodal_heads must be one of {UNIMODAL_HEADS}, got {unimodal!r}")
        self.d, self.fusion_kind = d, fusion
        self.image_adapter = Adapter(image_dim, d)
        self.text_adapter = Adapter(text_dim, d)
        self.missing_image = nn.Parameter(torch.randn(d) * 0.02)
        self.missing_text = nn.Parameter(torch.randn(d) * 0.02)
        self.fusion = nn.ModuleDict({"i2t": GatedCrossAttention(d, heads, attention_backend),
                                     "t2i": GatedCrossAttention(d, heads, attention_backend)})
        self.classifier = FusionClassifier(d, n_classes)
        # projection heads of the cross-modal alignment (CLIP-style): image and report are pulled
        # together in this space, so the adapters keep what only one modality knows
        self.align = nn.ModuleDict({"image": nn.Linear(d, d), "text": nn.Linear(d, d)})
        # uni-modal classifiers on the pooled adapter vector [B, d]: rows holding only that modality
        # are classified by them instead of by the fusion path (model.unimodal_heads)
        # ("late": both heads, and their logits are also added to the fused logits of paired rows)
        self.late_fusion = unimodal == "late"
        kinds = {"none": (), "image": ("image",), "text": ("text",)}.get(unimodal, ("image", "text"))
        self.unimodal = nn.ModuleDict({m: FusionClassifier(d, n_classes, in_dim=d) for m in kinds})

    def project(self, pooled: torch.Tensor, modality: str) -> torch.Tensor:
        """Pooled adapter vectors [B, d] -> the shared alignment space [B, d]."""
        return self.align[modality](pooled)

    def fuse(self, img_seq, img_mask, txt_seq, txt_mask) -> torch.Tensor:
        """Integrated representation R [B, 2d] from image [B, Li, d] and text [B, Lt, d] tokens."""
        if self.fusion_kind == "concat":
            return torch.cat([masked_mean(img_seq, img_mask), masked_mean(txt_seq, txt_mask)], dim=-1)
        zi = self.fusion["i2t"](img_seq, txt_seq, txt_mask)  # [B, Li, d] image queries text
        zt = self.fusion["t2i"](txt_seq, img_seq, img_mask)  # [B, Lt, d] text queries image
        return torch.cat([masked_mean(zi, img_mask), masked_mean(zt, txt_mask)], dim=-1)  # [B, 2d]
