"""Representation-level distillation on the public set (CreamFL-style).

Client half: every client returns the pooled adapter vectors of this round's public
rows for each modality it has (``public/image_reps``, ``public/text_reps``, [M, d]).
Next round it pulls its own public representations toward the global ones with a
contrastive term: its image vector of public sample j should be closer to the global
image vector of j than to those of the other samples in the batch (intra-modal), and,
in the head's alignment space (``SharedHead.project``), closer to the global *text*
vector of j (inter-modal); likewise for text. This is how knowledge reaches
clients whose encoders never leave the site (``fed.encoders = local``), and how an
image-only client learns the text side's geometry.

Server half: the global representation of a public row is the coordinate-wise median
of the clients' vectors for it (robust to a few outlying clients).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.federated.train import make_batch
from fedmm.models.head import masked_mean

MODALITIES = ("image", "text")


# ---- client half ---------------------------------------------------------------------------------

@torch.no_grad()
def public_representations(model, public, index: np.ndarray, device, batch_size: int) -> dict[str, np.ndarray]:
    """{"public/<mod>_reps": [M, d]} for the modalities present in every requested public row."""
    model.eval()
    rows = public.subset(torch.as_tensor(index))
    out = {m: [] for m in MODALITIES}
    for start in range(0, len(rows), batch_size):
        b = make_batch(rows, torch.arange(start, min(start + batch_size, len(rows))), device)
        hi, ht = b["has_image"].bool(), b["has_text"].bool()
        enc = model.encode(b, hi, ht)
        out["image"].append((enc.image.mean(1), hi))
        out["text"].append((masked_mean(enc.text, enc.text_mask & ht[:, None]), ht))
    reps = {}
    for m, parts in out.items():
        vecs, has = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if len(vecs) and bool(has.all()):
            reps[f"public/{m}_reps"] = vecs.float().cpu().numpy()
    return reps


def _nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / temperature  # [B, B]
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


class RepKD:
    """Contrastive pull of the client's public representations toward the global ones.

    Each step it draws its public rows first (:meth:`extra_images`): their images go through
    the image encoder in the training batch's call (``Forward.extra_image``, one call instead
    of two, the same arithmetic), their reports through the text encoder here.
    """

    def __init__(self, public, index: np.ndarray, global_reps: dict[str, np.ndarray], weight: float,
                 temperature: float, batch_size: int, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"train.rep_kd_every must be >= 1, got {every}")
        self.public, self.index, self.reps = public, index, global_reps
        self.weight, self.temperature, self.batch_size = weight * every, temperature, max(2, batch_size)
        self.every, self.calls = every, 0
        self._pick: np.ndarray | None = None   # positions in ``index`` of this step's rows
        self._pub: dict | None = None          # those rows as a batch

    def extra_images(self, generator: torch.Generator, device) -> torch.Tensor | None:
        """Images [E, 1, S, S] of this step's public rows that have one (None on the steps the
        term skips, or when none has)."""
        self.calls += 1
        if (self.calls - 1) % self.every:   # steps 1, 1 + k, 1 + 2k, ... of this client's round
            self._pick = self._pub = None
            return None
        self._pick = torch.randperm(len(self.index), generator=generator)[: self.batch_size].numpy()
        self._pub = make_batch(self.public, torch.as_tensor(self.index[self._pick]), device)
        hi = self._pub["has_image"].bool()
        return self._pub["images"][hi] if bool(hi.any()) else None

    def __call__(self, model, batch: dict, out, gv, generator) -> torch.Tensor | None:
        if self._pick is None:
            return None
        pick, pub = self._pick, self._pub
        hi, ht = pub["has_image"].bool(), pub["has_text"].bool()
        dev = out.logits.device
        txt = model.encode(pub, torch.zeros_like(hi), ht)   # reports only: the images came with the batch
        own = {"text": (masked_mean(txt.text, txt.text_mask & ht[:, None]), ht)}
        if bool(hi.all()) and out.extra_image is not None:
            own = {"image": (out.extra_image.mean(1), hi), **own}   # [E, d]
        glob = {m: torch.as_tensor(self.reps[m][pick], device=dev) for m in self.reps}
        loss = []
        for m, (vec, has) in own.items():
            if not bool(has.all()):
                continue
            for gm, g in glob.items():
                if gm == m:   # intra-modal, in the adapter space
                    loss.append(_nce(vec, g, self.temperature))
                else:         # inter-modal, in the alignment space
                    loss.append(_nce(model.head.project(vec, m), model.head.project(g, gm), self.temperature))
        return self.weight * torch.stack(loss).mean() if loss else None


def client_term(broadcast, data, tcfg) -> RepKD | None:
    """The representation-KD term of a client, when the broadcast carries global representations."""
    a = broadcast.arrays
    reps = {m: a[f"repkd/{m}"] for m in MODALITIES if f"repkd/{m}" in a}
    if not reps or "repkd/index" not in a or tcfg.rep_kd_weight <= 0:
        return None
    return RepKD(data.public_view(), a["repkd/index"], reps, tcfg.rep_kd_weight, tcfg.rep_kd_temperature,
                 tcfg.kd_batch_size, tcfg.rep_kd_every)


# ---- server half ---------------------------------------------------------------------------------

def global_representations(uploads: list) -> dict[str, np.ndarray]:
    """{"image": [M, d], "text": [M, d]}: per public row, the median over the clients' vectors."""
    out = {}
    for m in MODALITIES:
        stack = [u.arrays[f"public/{m}_reps"] for u in uploads if f"public/{m}_reps" in u.arrays]
        if stack:
            out[m] = np.median(np.stack(stack), axis=0).astype(np.float32)
    return out
