"""Logit adjustment for long-tailed and skewed labels (client half; the server half is the ``balanced``
flag of ``fedmm.federated.server.calibrate``, docs/ARCHITECTURE.md §6).

Each client trains on ``logits + tau * log(prior)`` (balanced softmax / logit-adjusted
cross-entropy), ``prior`` being the label frequencies of its own training split
(add-one smoothed). The model's raw logits then estimate a class-balanced posterior:
rare classes are not drowned by a site's majority class, and clients whose label
distributions differ (label skew) learn classifiers that agree, so averaging them
is meaningful. Inference uses the raw logits.

``train.balance_paired = false`` adjusts only rows that hold one modality (image-only and
report-only rows and views): where the evidence is weak, balanced posteriors spread the
predictions over the rare classes, while rows with both modalities keep prior-calibrated
posteriors (two classes that only a faint image sign tells apart are then not decided
by the balancing alone).
"""
from __future__ import annotations

import torch


def log_prior(labels: torch.Tensor, n_classes: int, multilabel: bool = False) -> torch.Tensor:
    """log of the add-one smoothed label frequencies [C] of ``labels`` ([N] int, or [N, C] multi-hot)."""
    counts = labels.float().sum(0) if multilabel else torch.bincount(labels, minlength=n_classes).float()
    prior = (counts + 1.0) / (counts.sum() + n_classes)
    return prior.log()


def logit_adjustment(labels: torch.Tensor, n_classes: int, tau: float, multilabel: bool = False) -> torch.Tensor | None:
    """Additive training-time logit offset [C] (``tau * log prior``), or None when off.

    Multi-label data (independent sigmoids) are left unadjusted.
    """
    if tau <= 0 or multilabel or len(labels) == 0:
        return None
    return tau * log_prior(labels, n_classes)


def paired_adjustment(adjust: torch.Tensor | None, tcfg, gv=None) -> torch.Tensor | None:
    """The offset [C] for rows holding both modalities: ``adjust`` itself
    (``train.balance_paired``), none (default), or with ``train.paired_federation_prior``
    ``tau * (log own prior - log federation prior)``, so that the raw logits of paired rows
    estimate the posterior under the federation's label prior at every client (the prior
    read from the global centers' label histograms; none before there are any)."""
    if adjust is None:
        return None
    if tcfg.balance_paired:
        return adjust
    if not tcfg.paired_federation_prior or gv is None or not len(gv.hist_img) or not len(gv.hist_txt):
        return None
    totals = torch.as_tensor(gv.hist_img.sum(0) + gv.hist_txt.sum(0), dtype=torch.float64)  # [C]
    federation = ((totals + 1.0) / (totals.sum() + len(totals))).log().float()
    return adjust - float(tcfg.logit_adjust_tau) * federation.to(adjust.device)


def adjusted_logits(logits: torch.Tensor, adjust: torch.Tensor | None, has_image: torch.Tensor,
                    has_text: torch.Tensor, paired_adjust: torch.Tensor | None = None) -> torch.Tensor:
    """``logits`` [B, C] + ``adjust`` [C] on rows holding one modality, + ``paired_adjust``
    [C] (None: nothing) on rows holding both."""
    if adjust is None and paired_adjust is None:
        return logits
    single = (has_image.bool() ^ has_text.bool()).to(logits.dtype)[:, None]  # [B, 1]
    out = logits if adjust is None else logits + single * adjust
    return out if paired_adjust is None else out + (1.0 - single) * paired_adjust
