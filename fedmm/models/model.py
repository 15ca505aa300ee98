"""The client model: image and text encoders + the SharedHead, with missing-modality handling."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedmm.models.encoders import ImageEncoder, TextEncoder
from fedmm.models.head import SharedHead, masked_mean
from fedmm.models.surrogate import GlobalVectors, surrogate_tokens


SURROGATE_FILLS = ("both", "image", "text", "none")


@dataclass
class ModelConfig:
    image_arch: str = "small"          # mobilenet_v3_small | large
    text_size: str = "tiny"            # BERT tiny (L=2, H=128) | mini (L=4, H=256)
    d: int = 128
    heads: int = 4
    fusion: str = "gated"              # gated | concat
    surrogate_m: int = 4
    surrogate_temperature: float = 0.1
    surrogate_fill: str = "image"      # which missing modality surrogates fill: both | image | text | none
                                       # (the others get the learned missing token)
    unimodal_heads: str = "auto"       # auto | none | image | text | both | late: rows with only that
                                       # modality are classified by a uni-modal head on its pooled vector
                                       # ("late": both heads, also added to the fused logits of paired rows;
                                       # "auto": "image" for fedmm, "none" for the baselines, which keep
                                       # the literature's single fusion path; see resolve_unimodal_heads)
    unimodal_fusion_loss: float = 1.0  # weight of the fusion path's own loss on the rows a uni-modal head
                                       # classifies (0: the fusion path never sees those views)
    modality_dropout: float = 0.3
    common_init: bool = True           # all clients' encoders start from the same random weights
    attention_backend: str = "auto"
    image_weights: str = ""            # local torchvision state dict (optional)
    text_model: str = ""               # local Hugging Face folder (optional)


@dataclass
class Encoded:
    image: torch.Tensor                # [B, Li, d] adapter tokens (zeros where absent)
    text: torch.Tensor                 # [B, Lt, d]
    text_mask: torch.Tensor            # [B, Lt] bool padding mask
    extra_image: torch.Tensor | None = None   # [E, Li, d] adapter tokens of extra images encoded alongside


@dataclass
class Forward:
    logits: torch.Tensor               # [B, C]
    pooled_image: torch.Tensor         # [B, d] adapter mean of real image tokens (zeros where absent)
    pooled_text: torch.Tensor          # [B, d]
    has_image: torch.Tensor            # [B] bool, after modality dropout
    has_text: torch.Tensor             # [B] bool
    enc: Encoded | None = None         # adapter tokens of every modality the batch holds (before dropout)
    fused: torch.Tensor | None = None  # [B, C] the fusion path's logits (before any uni-modal head)
    unimodal_rows: torch.Tensor | None = None   # [B] bool rows whose logits came from a uni-modal head
    extra_image: torch.Tensor | None = None     # [E, Li, d] tokens of ``forward``'s extra images


def fusion_path_loss(out: Forward, rows: torch.Tensor, weight: float, loss_fn) -> torch.Tensor | None:
    """``weight`` x the fusion path's loss on the ``rows`` [B] bool that a uni-modal head classified,
    scaled by their share of ``rows`` (so each such row counts like a row of the main loss);
    ``loss_fn(logits [N, C], picked [B] bool)`` returns a mean loss. None when nothing applies."""
    if weight <= 0 or out.fused is None or out.unimodal_rows is None:
        return None
    picked = out.unimodal_rows & rows
    n = int(picked.sum())
    if n == 0:
        return None
    return weight * loss_fn(out.fused[picked], picked) * (n / max(int(rows.sum()), 1))


def trim_masked(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` [B, L, d] and ``mask`` [B, L] without the trailing positions no row uses
    ([B, L', d], [B, L']; at least one position). The fusion ignores masked positions (zero
    attention weight, zero pooling weight), so the result is the same; the work is not."""
    used = mask.any(0).nonzero()   # [n, 1]
    width = int(used.max()) + 1 if len(used) else 1
    return (tokens, mask) if width == mask.shape[1] else (tokens[:, :width], mask[:, :width])


def resolve_unimodal_heads(cfg: ModelConfig, strategy: str = "fedmm") -> ModelConfig:
    """``cfg`` with ``unimodal_heads="auto"`` made concrete for ``strategy``: fedmm classifies
    report-less rows with a uni-modal image head (the fusion path still trains on them through
    ``unimodal_fusion_loss``); fedavg, fedprox, local and centralized keep one fusion path, as
    the methods they stand for do. Any explicit value is kept, for every strategy."""
    if cfg.unimodal_heads != "auto":
        return cfg
    return replace(cfg, unimodal_heads="image" if strategy == "fedmm" else "none")


class FedMMModel(nn.Module):
    """Image + text classifier: encoders + :class:`SharedHead`; what of it is federated is
    decided by :mod:`fedmm.federated.params` (``fed.encoders``, ``fed.bn``)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, n_classes: int, max_len: int = 64) -> None:
        super().__init__()
        if cfg.surrogate_fill not in SURROGATE_FILLS:
            raise ValueError(f"model.surrogate_fill must be one of {SURROGATE_FILLS}, got {cfg.surrogate_fill!r}")
        cfg = resolve_unimodal_heads(cfg)
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg.image_arch, cfg.image_weights or None)
        self.text_encoder = TextEncoder(vocab_size, cfg.text_size, cfg.text_model or None, max_len)
        self.head = SharedHead(self.image_encoder.out_dim, self.text_encoder.out_dim, n_classes, cfg.d,
                               cfg.heads, cfg.fusion, cfg.attention_backend, cfg.unimodal_heads)

    def _fill_missing(self, present_tokens, present, other_pooled, missing_token, gv_src, gv_dst):
        """Tokens [B, L, d] + mask [B, L]: real tokens where present, else surrogates/missing token."""
        B, L, d = present_tokens.shape
        if gv_src is not None and gv_src.shape[0] > 0:
            fill = surrogate_tokens(other_pooled, gv_src, gv_dst, self.cfg.surrogate_m,
                                    self.cfg.surrogate_temperature)  # [B, m, d]
        else:
            fill = missing_token.view(1, 1, d).expand(B, 1, d)  # [B, 1, d]
        Lf = fill.shape[1]
        width = max(L, Lf)
        real = F.pad(present_tokens, (0, 0, 0, width - L))  # [B, W, d]
        fill = F.pad(fill, (0, 0, 0, width - Lf))  # [B, W, d]
        real_mask = torch.arange(width, device=real.device) < L  # [W]
        fill_mask = torch.arange(width, device=real.device) < Lf  # [W]
        tokens = torch.where(present[:, None, None], real, fill.to(real.dtype))
        mask = torch.where(present[:, None], real_mask[None], fill_mask[None])  # [B, W]
        return tokens, mask

    def encode(self, batch: dict, has_img: torch.Tensor, has_txt: torch.Tensor,
               extra_images: torch.Tensor | None = None) -> Encoded:
        """Adapter tokens of the present modalities (encoders run only on rows that have them).

        ``extra_images`` [E, 1, S, S] (e.g. public rows a loss term needs) go through the image
        encoder in the same call as the batch's images, as a separate BatchNorm segment (the
        same arithmetic as a call of their own, at the cost of one call); their tokens come
        back as ``Encoded.extra_image`` [E, Li, d].
        """
        B, d = has_img.shape[0], self.head.d
        i_idx, t_idx = has_img.nonzero().squeeze(1), has_txt.nonzero().squeeze(1)
        img_full, extra_tok = self.head.missing_image.new_zeros(B, 1, d), None
        images = batch["images"][i_idx]   # [Bi, 1, S, S]
        if extra_images is not None and len(extra_images):
            joint = torch.cat([images, extra_images.to(images.device)])   # [Bi + E, 1, S, S]
            tokens = self.head.image_adapter(self.image_encoder(joint, segments=(len(images), len(extra_images))))
            img_tok, extra_tok = tokens[:len(images)], tokens[len(images):]   # [Bi, Li, d], [E, Li, d]
        elif len(i_idx):
            img_tok = self.head.image_adapter(self.image_encoder(images))  # [Bi, Li, d]
        if len(i_idx):
            img_full = img_tok.new_zeros(B, img_tok.shape[1], d).index_copy(0, i_idx, img_tok)  # [B, Li, d]
        Lt = batch["input_ids"].shape[1]
        txt_full = self.head.missing_text.new_zeros(B, Lt, d)
        if len(t_idx):
            txt_tok = self.head.text_adapter(
                self.text_encoder(batch["input_ids"][t_idx], batch["attention_mask"][t_idx]))  # [Bt, Lt, d]
            txt_full = txt_full.index_copy(0, t_idx, txt_tok)  # [B, Lt, d]
        return Encoded(img_full, txt_full, batch["attention_mask"].bool(), extra_tok)

    def classify(self, enc: Encoded, has_img: torch.Tensor, has_txt: torch.Tensor,
                 gv: GlobalVectors | None = None) -> Forward:
        """Fill missing modalities, fuse, classify. has_* may hide modalities that ``enc`` holds."""
        B = has_img.shape[0]
        txt_valid = enc.text_mask & has_txt[:, None]  # [B, Lt]
        pooled_img = masked_mean(enc.image, has_img[:, None].expand(B, enc.image.shape[1]))  # [B, d]
        pooled_txt = masked_mean(enc.text, txt_valid)  # [B, d]
        gv_t = self._global_tensors(gv, has_img.device)
        ci, ct = gv_t if gv_t else (None, None)
        fill_img, fill_txt = self.cfg.surrogate_fill in ("both", "image"), self.cfg.surrogate_fill in ("both", "text")
        img_seq, img_mask = self._fill_missing(enc.image, has_img, pooled_txt, self.head.missing_image,
                                               ct if fill_img else None, ci)
        txt_seq, txt_fill_mask = self._fill_missing(enc.text, has_txt, pooled_img, self.head.missing_text,
                                                    ci if fill_txt else None, ct)
        Lt = enc.text.shape[1]
        txt_mask = torch.where(has_txt[:, None], F.pad(txt_valid, (0, txt_seq.shape[1] - Lt)), txt_fill_mask)
        img_seq, img_mask = trim_masked(img_seq, img_mask)
        txt_seq, txt_mask = trim_masked(txt_seq, txt_mask)  # e.g. a hidden report: 1 token, not 48
        r = self.head.fuse(img_seq, img_mask, txt_seq, txt_mask)  # [B, 2d]
        logits = fused = self.head.classifier(r)  # [B, C]
        replaced = torch.zeros_like(has_img)  # [B]
        if self.head.late_fusion:
            both = (has_img & has_txt)[:, None]
            logits = torch.where(both, logits + self.head.unimodal["image"](pooled_img)
                                 + self.head.unimodal["text"](pooled_txt), logits)
        for mod, pooled, only in (("image", pooled_img, has_img & ~has_txt), ("text", pooled_txt, has_txt & ~has_img)):
            if mod in self.head.unimodal and bool(only.any()):
                logits = torch.where(only[:, None], self.head.unimodal[mod](pooled), logits)
                replaced = replaced | only
        return Forward(logits, pooled_img, pooled_txt, has_img, has_txt, fused=fused, unimodal_rows=replaced)

    def forward(self, batch: dict, gv: GlobalVectors | None = None, modality_dropout: float = 0.0,
                generator: torch.Generator | None = None,
                extra_images: Callable[[], torch.Tensor | None] | None = None) -> Forward:
        """Logits for a batch; with ``modality_dropout`` p, each full sample loses one modality w.p. p.

        Encoders run on every modality the batch holds (``Forward.enc``, e.g. for the
        cross-modal alignment of paired samples); dropout hides modalities from the head only.
        ``extra_images`` returns images [E, 1, S, S] to run through the image encoder with the
        batch's (see :meth:`encode`; tokens in ``Forward.extra_image``); it is called after the
        dropout draw, so ``generator`` is drawn from in the same order as without it.
        """
        has_img, has_txt = batch["has_image"].bool(), batch["has_text"].bool()
        if modality_dropout > 0:   # drawn before the encoders run (they never use ``generator``)
            u = torch.rand(has_img.shape[0], generator=generator).to(has_img.device)
        enc = self.encode(batch, has_img, has_txt, extra_images() if extra_images is not None else None)
        if modality_dropout > 0:
            both = has_img & has_txt
            has_img = has_img & ~(both & (u < modality_dropout / 2))
            has_txt = has_txt & ~(both & (u >= modality_dropout / 2) & (u < modality_dropout))
        out = self.classify(enc, has_img, has_txt, gv)
        out.enc, out.extra_image = enc, enc.extra_image
        return out

    @staticmethod
    def _global_tensors(gv: GlobalVectors | None, device):
        """Paired (image centers [P, d], text centers [P, d]) as tensors, or None before round 1."""
        if gv is None or len(gv.pair_img) == 0:
            return None
        ci = torch.as_tensor(gv.img_centers[gv.pair_img], device=device)
        ct = torch.as_tensor(gv.txt_centers[gv.pair_txt], device=device)
        return ci, ct
