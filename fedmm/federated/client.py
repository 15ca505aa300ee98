"""Client steps (docs/ARCHITECTURE.md §5): train locally, score, summarise representations, upload."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmm.data.encode import EncodedSplit
from fedmm.federated.attacks import maybe_attack
from fedmm.federated.messages import Message
from fedmm.federated.strategies import Strategy
from fedmm.federated.summary import summarize_vectors
from fedmm.federated.mechanisms import alignment, balance, bn_stats, logit_kd, missing_views, prox, rep_kd
from fedmm.federated.train import TrainResult, client_views, own_view, predict, train_local, view_rows
from fedmm.metrics import classification_metrics
from fedmm.federated.params import load_shared, shared_state, trainable_groups
from fedmm.models.model import FedMMModel, resolve_unimodal_heads
from fedmm.models.surrogate import GlobalVectors


@dataclass
class ClientData:
    """What one client holds: its own splits plus the public set (already encoded)."""

    name: str
    index: int
    train: EncodedSplit
    val: EncodedSplit
    public: EncodedSplit
    classes: list[str]
    multilabel: bool = False

    @property
    def modality(self) -> str:
        img, txt = bool(self.train.has_image.any()), bool(self.train.has_text.any())
        if not (img or txt):   # e.g. a report-only site when reports are hidden everywhere
            return "none"
        both = bool((self.train.has_image & self.train.has_text).all())
        return "multimodal" if both else "image_only" if not txt else "text_only" if not img else "mixed"

    def public_view(self) -> EncodedSplit:
        """The public set restricted to the modalities this client has."""
        pub = self.public.subset(torch.arange(len(self.public)))
        pub.has_image = pub.has_image & bool(self.train.has_image.any())
        pub.has_text = pub.has_text & bool(self.train.has_text.any())
        return pub


COMMON_INIT = 0xC0DE  # the "client index" of the shared initialisation
SERVER_INIT = 0xC0FFEE  # the server's initial model (the global state of round 0)


def stable_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (seed, round, client, purpose)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def client_init_seed(cfg, client_index: int) -> int:
    """Seed of a client's initial weights. With ``model.common_init`` (default) every client's
    encoders start from the same random weights, as they would from one shared pretrained
    checkpoint: their features stay comparable, so the federated adapters on top of them
    mean the same thing at every client. Off: each client draws its own."""
    return stable_seed(int(cfg.seed), COMMON_INIT if cfg.model.common_init else client_index, 1)


def server_init_seed(cfg) -> int:
    """Seed of the server's initial model, whose federated tensors are the round-0 global state."""
    return stable_seed(int(cfg.seed), SERVER_INIT)


def build_model(cfg, vocab_size: int, n_classes: int, seed: int) -> FedMMModel:
    """A freshly initialised model; initialisation is a function of ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model_cfg = resolve_unimodal_heads(cfg.model, cfg.fed.strategy)
        return FedMMModel(model_cfg, vocab_size, n_classes, cfg.data.max_len)


def assemble_model(cfg, vocab_size: int, n_classes: int, client_index: int, device,
                   state: dict[str, np.ndarray] | None = None, shared: dict[str, np.ndarray] | None = None,
                   shared_prefix: str = "shared/") -> FedMMModel:
    """A client's model as training, the update step and evaluation all use it: initialised from
    the client's seed (:func:`client_init_seed`), then its own ``state`` (all parameters and
    buffers, from its last round) when given, then the federated tensors ``shared`` (named
    ``shared_prefix`` + federated name) when given."""
    model = build_model(cfg, vocab_size, n_classes, client_init_seed(cfg, client_index)).to(device)
    if state is not None:
        load_model_state(model, state)
    if shared is not None:
        load_shared(model, shared, prefix=shared_prefix)
    return model


def model_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """numpy copies of a module's state dict (parameters and buffers)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_model_state(model: FedMMModel, arrays: dict[str, np.ndarray], prefix: str = "", strict: bool = True) -> None:
    state = {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (strict and missing):
        raise ValueError(f"state mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")


def training_terms(model: FedMMModel, data: ClientData, broadcast: Message, strategy: Strategy, cfg,
                   groups: dict[str, str], adjust: torch.Tensor | None = None) -> list:
    """The loss terms of the mechanisms this strategy enables (each in fedmm.federated.mechanisms)."""
    terms = []
    if strategy.missing_views and cfg.train.views_weight > 0:
        terms.append(missing_views.MissingViewsTerm(cfg.train.views_weight, adjust, data.multilabel))
    if strategy.kd and (kd := logit_kd.student_term(broadcast, data, cfg.train)) is not None:
        terms.append(kd)
    if strategy.rep_kd and (rk := rep_kd.client_term(broadcast, data, cfg.train)) is not None:
        terms.append(rk)
    if strategy.align and cfg.train.align_weight > 0:
        terms.append(alignment.AlignmentTerm(cfg.train.align_weight, cfg.train.align_temperature))
    if strategy.prox_mu > 0:
        terms.append(prox.ProxTerm(model, groups, strategy.prox_mu))
    return terms


def validation_scores(model: FedMMModel, data: ClientData, gv, device, batch_size: int) -> dict[str, float]:
    """Validation macro-F1 of the client's model on each view its modalities allow."""
    if not len(data.val):
        return {}
    views = client_views(data.modality)
    logits = predict(model, data.val, device, gv, views, batch_size=batch_size)
    labels = data.val.labels.numpy()
    return {v: classification_metrics(logits[v], labels[view_rows(data.val, v)], data.classes,
                                      data.multilabel)["macro_f1"] for v in views if len(logits[v])}


def run_client_training(model: FedMMModel, data: ClientData, broadcast: Message, strategy: Strategy, cfg,
                        generator: torch.Generator, device) -> tuple[TrainResult, dict[str, float]]:
    """Client steps 1-3: load shared weights, train locally with the enabled mechanisms,
    validation macro-F1 per view."""
    if strategy.share:
        load_shared(model, broadcast.arrays)
    gv = GlobalVectors.from_arrays(broadcast.arrays) if strategy.prototypes else None
    groups = trainable_groups(model, strategy.spec)
    adjust = balance.logit_adjustment(data.train.labels, len(data.classes), cfg.train.logit_adjust_tau,
                                      data.multilabel) if strategy.balance else None
    terms = training_terms(model, data, broadcast, strategy, cfg, groups, adjust)
    dropout = strategy.modality_dropout if data.modality in ("multimodal", "mixed") else 0.0
    result = train_local(model, data.train, cfg.train, generator=generator, device=device, multilabel=data.multilabel,
                         gv=gv, modality_dropout=dropout, terms=terms, groups=groups, logit_adjust=adjust,
                         paired_adjust=balance.paired_adjustment(adjust, cfg.train, gv))
    return result, validation_scores(model, data, gv, device, cfg.train.eval_batch_size)


def extract_representations(model: FedMMModel, split: EncodedSplit, device,
                            batch_size: int = 256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pooled adapter vectors per modality: {"image": (vectors [Ni, d], labels [Ni]), "text": ...}."""
    model.eval()
    vecs = {"image": [], "text": []}
    labs = {"image": [], "text": []}
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            b = {k: getattr(split, k)[idx].to(device) for k in ("images", "input_ids", "attention_mask")}
            hi, ht = split.has_image[idx].to(device), split.has_text[idx].to(device)
            out = model.classify(model.encode(b, hi, ht), hi, ht)
            for mod, has, pooled in (("image", hi, out.pooled_image), ("text", ht, out.pooled_text)):
                vecs[mod].append(pooled[has].cpu().numpy())
                labs[mod].append(split.labels[idx][has.cpu()].numpy())
    d = model.head.d
    return {m: (np.concatenate(vecs[m]) if vecs[m] else np.zeros((0, d), np.float32),
                np.concatenate(labs[m]) if labs[m] else split.labels[:0].numpy()) for m in vecs}


def statistics_upload(model: FedMMModel, data: ClientData, broadcast: Message, r: int, device) -> Message:
    """The statistics pass after the last round: BatchNorm statistics of the global image encoder
    on this client's training images (nothing is trained or saved)."""
    load_shared(model, broadcast.arrays)
    images = data.train.images[data.train.has_image]
    arrays = bn_stats.client_statistics(model, images, device)
    meta = {"client": data.name, "round": r, "n_train": max(int(len(images)), 1), "val_score": 0.0,
            "train_loss": 0.0, "trained_groups": [], "modality": data.modality, "task": bn_stats.TASK}
    return Message("upload", arrays if len(images) else {}, meta)


def client_round(data: ClientData, broadcast: Message, cfg, strategy: Strategy,
                 previous: dict[str, np.ndarray] | None, vocab_size: int, device) -> tuple[Message, dict | None]:
    """One full client round: resume own state (``previous``: the client's model state after its
    last round, None before its first), train, summarise, compute public logits, upload.
    Returns the upload and the client's new state (None when the round trained nothing)."""
    r = int(broadcast.meta["round"])
    seed = int(cfg.seed)
    model = assemble_model(cfg, vocab_size, len(data.classes), data.index, device, state=previous)
    if broadcast.meta.get("task") == bn_stats.TASK:
        return statistics_upload(model, data, broadcast, r, device), None
    generator = torch.Generator().manual_seed(stable_seed(seed, r, data.index, 2))
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: seed it, then restore
        torch.manual_seed(stable_seed(seed, r, data.index, 4))
        result, scores = run_client_training(model, data, broadcast, strategy, cfg, generator, device)
    gv = GlobalVectors.from_arrays(broadcast.arrays) if strategy.prototypes else None
    arrays: dict[str, np.ndarray] = {}
    if strategy.share:
        trained = shared_state(model, strategy.spec, result.trained_groups)
        arrays.update({f"shared/{k}": v for k, v in trained.items()})
    if strategy.prototypes:
        reps = extract_representations(model, data.train, device, cfg.train.eval_batch_size)
        for mod, (vectors, labels) in reps.items():
            if len(vectors):
                summ = summarize_vectors(vectors, labels, len(data.classes), cfg.fed.local_centers,
                                         cfg.fed.min_cluster_size, stable_seed(seed, r, data.index, 3),
                                         cfg.fed.dp_clip, cfg.fed.dp_noise, data.multilabel, device=device)
                arrays.update({f"summary/{mod}_{k}": v for k, v in summ.items()})
    pub_idx = broadcast.arrays.get("public/index")
    if pub_idx is not None and strategy.kd:
        arrays.update(logit_kd.public_logits(model, data.public_view(), pub_idx, client_views(data.modality),
                                             gv, device, cfg.train.eval_batch_size))
    if pub_idx is not None and strategy.rep_kd:
        arrays.update(rep_kd.public_representations(model, data.public_view(), pub_idx, device,
                                                    cfg.train.eval_batch_size))
    state = model_state(model)
    own = own_view(data.modality)
    val_labels = data.val.labels.numpy()   # [N] class ids, or [N, C] multi-hot
    # classes present in the validation split (multi-hot: the classes with a positive row)
    if data.multilabel:
        val_classes = int((val_labels.sum(0) > 0).sum()) if len(val_labels) else 0
    else:
        val_classes = int(len(np.unique(val_labels)))
    meta = {"client": data.name, "round": r, "n_train": len(data.train), "val_score": float(scores.get(own, 0.0)),
            "val_scores": {k: float(v) for k, v in scores.items()}, "n_val": len(data.val),
            "val_classes": val_classes, "train_loss": float(result.loss),
            "trained_groups": sorted(result.trained_groups), "modality": data.modality}
    return maybe_attack(Message("upload", arrays, meta), broadcast, cfg, data), state   # attack.*: off by default
