"""The one local training loop and batched inference; every strategy uses these."""
from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.data.encode import EncodedSplit
from fedmm.data.modality import VIEWS
from fedmm.federated.mechanisms.balance import adjusted_logits
from fedmm.models.model import FedMMModel, fusion_path_loss
from fedmm.models.surrogate import GlobalVectors

BATCH_KEYS = ("images", "input_ids", "attention_mask", "has_image", "has_text", "labels")
AMP_MODES = ("none", "bf16")   # train.amp

log = logging.getLogger("fedmm.train")


def make_batch(split: EncodedSplit, idx: torch.Tensor, device) -> dict:
    return {k: getattr(split, k)[idx].to(device) for k in BATCH_KEYS}


@dataclass
class TrainResult:
    loss: float
    steps: int
    trained_groups: set = field(default_factory=set)   # federation groups that received a gradient


def _task_loss(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) with the student softened by T (teacher probs already softened)."""
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_p, teacher_probs, reduction="batchmean")


@functools.lru_cache(maxsize=None)
def _amp_ignored_once(amp: str, device_type: str) -> None:
    log.warning("train.amp=%s applies to CUDA only; training on %s stays in float32", amp, device_type)


def autocast_context(amp: str, device) -> contextlib.AbstractContextManager:
    """The autocast region of one training step for ``train.amp``.

    ``none`` (default): no autocast, float32 throughout. ``bf16``: bfloat16 autocast on
    CUDA; on any other device it is ignored (float32, one warning). Parameters, gradients
    and optimizer state stay float32 either way; autocast keeps losses, softmax, norms and
    LayerNorm in float32, and the Triton attention runs in the autocast dtype.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"train.amp must be one of {', '.join(AMP_MODES)}; got {amp!r}")
    device_type = torch.device(device).type
    if amp == "none":
        return contextlib.nullcontext()
    if device_type != "cuda":
        _amp_ignored_once(amp, device_type)
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, tcfg, device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, torch's fused implementation (CPU and CUDA: one kernel
    over all tensors instead of a loop over them; ~3x faster a step on CPU, benchmarks/README.md)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tcfg.lr,
                             weight_decay=tcfg.weight_decay, **({"fused": True} if fused else {}))


def batch_loss(model: FedMMModel, batch: dict, gv, modality_dropout: float, generator, terms=(),
               adjust: torch.Tensor | None = None, paired_adjust: torch.Tensor | None = None,
               multilabel: bool = False) -> torch.Tensor:
    """One training step's loss: the (logit-adjusted) task loss plus every enabled term.

    A term with an ``extra_images(generator, device)`` method (representation KD's public
    rows) gets those images through the image encoder in the same call as the batch's
    (``FedMMModel.encode``), as ``out.extra_image``.
    """
    askers = [t for t in terms if hasattr(t, "extra_images")]
    if len(askers) > 1:
        raise ValueError("at most one training term may add images to the encoder pass")
    extra = functools.partial(askers[0].extra_images, generator, batch["has_image"].device) if askers else None
    out = model(batch, gv, modality_dropout, generator, extra_images=extra)
    logits = adjusted_logits(out.logits, adjust, out.has_image, out.has_text, paired_adjust)
    labels = batch["labels"]
    loss = _task_loss(logits, labels, multilabel)

    def fused_loss(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:   # z [N, C]: fusion-path logits
        z = adjusted_logits(z, adjust, out.has_image[rows], out.has_text[rows], paired_adjust)
        return _task_loss(z, labels[rows], multilabel)

    # rows a uni-modal head classified also train the fusion path on their view (model.unimodal_fusion_loss)
    fused = fusion_path_loss(out, torch.ones_like(out.has_image), model.cfg.unimodal_fusion_loss, fused_loss)
    if fused is not None:
        loss = loss + fused
    for term in terms:
        extra = term(model, batch, out, gv, generator)
        if extra is not None:
            loss = loss + extra
    return loss


def train_local(model: FedMMModel, train: EncodedSplit, tcfg, *, generator: torch.Generator, device,
                multilabel: bool = False, gv: GlobalVectors | None = None, modality_dropout: float = 0.0,
                terms=(), groups: dict[str, str] | None = None,
                logit_adjust: torch.Tensor | None = None, paired_adjust: torch.Tensor | None = None) -> TrainResult:
    """E epochs of the task loss plus the enabled mechanisms' ``terms``.

    Each term is called as ``term(model, batch, out, gv, generator)`` and returns a
    scalar loss or None (see :mod:`fedmm.federated.mechanisms`). ``logit_adjust`` [C]
    is added to the logits of single-modality rows inside the task loss only (logit-adjusted
    cross-entropy), ``paired_adjust`` [C] to those of rows holding both modalities.
    ``groups`` maps parameter names (``model.named_parameters``) to their federation
    group; a group counts as trained once one of its parameters receives a non-zero
    gradient (e.g. a text-only client never trains the image encoder).

    ``tcfg.amp`` (train.amp, :func:`autocast_context`) selects bf16 autocast on CUDA. On
    CUDA the split is copied to the device once and batches are gathered there, and the
    running loss stays on the device (no host synchronisation for it per step); on CPU
    every step is computed exactly as without these (the same batches and arithmetic).
    """
    model.train()
    device = torch.device(device)
    amp = getattr(tcfg, "amp", "none")
    autocast_context(amp, device)   # an unknown train.amp fails before any step
    opt = make_optimizer(model, tcfg, device)
    params = dict(model.named_parameters())
    groups = groups or {}
    adjust = None if logit_adjust is None else logit_adjust.to(device)
    paired = None if paired_adjust is None else paired_adjust.to(device)
    resident = {k: getattr(train, k).to(device) for k in BATCH_KEYS} if device.type == "cuda" else None
    result = TrainResult(0.0, 0)
    total = torch.zeros((), dtype=torch.float64, device=device)   # float64 sum of float32 losses
    for epoch in range(tcfg.local_epochs):
        order = torch.randperm(len(train), generator=generator)
        if resident is not None:
            order = order.to(device)
        for start in range(0, len(order), tcfg.batch_size):
            idx = order[start:start + tcfg.batch_size]
            batch = make_batch(train, idx, device) if resident is None else {k: v[idx] for k, v in resident.items()}
            with autocast_context(amp, device):
                loss = batch_loss(model, batch, gv, modality_dropout, generator, terms, adjust, paired, multilabel)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for name, group in groups.items():
                p = params[name]
                if group not in result.trained_groups and p.grad is not None and bool(p.grad.any()):
                    result.trained_groups.add(group)
            opt.step()
            total += loss.detach().double()
            result.steps += 1
    result.loss = float(total) / max(result.steps, 1)
    return result


def client_views(modality: str) -> tuple[str, ...]:
    """Modality views a client's model can run with the encoders it trained."""
    return {"image_only": ("image_only",), "text_only": ("text_only",)}.get(modality, tuple(VIEWS))


def own_view(modality: str) -> str:
    """The view a client of this type deploys (and learns from, as a distillation student)."""
    return {"image_only": "image_only", "text_only": "text_only"}.get(modality, "full")


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


@torch.no_grad()
def predict_rows(model: FedMMModel, split: EncodedSplit, device, gv: GlobalVectors | None = None,
                 views=("full",), batch_size: int = 256) -> dict[str, np.ndarray]:
    """Logits [N, C] per view for every row of ``split`` (rows a view cannot score: zeros)."""
    out, n_classes = {}, model.head.classifier.net[-1].out_features
    for v, logits in predict(model, split, device, gv, views, batch_size).items():
        full = np.zeros((len(split), n_classes), np.float32)
        if len(logits):
            full[view_rows(split, v)] = logits
        out[v] = full
    return out
