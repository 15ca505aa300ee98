"""Global vectors published by the server and surrogate tokens for a missing modality (docs/ARCHITECTURE.md §4)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class GlobalVectors:
    """Server-side summary of the federation's representation space.

    img_centers [Ki, d], txt_centers [Kt, d]; pairing (pair_img[p], pair_txt[p]) for
    p < P; hist_img [Ki, C], hist_txt [Kt, C] label distributions; prototypes [P, 2d].
    """

    img_centers: np.ndarray
    txt_centers: np.ndarray
    pair_img: np.ndarray
    pair_txt: np.ndarray
    hist_img: np.ndarray
    hist_txt: np.ndarray
    prototypes: np.ndarray

    def to_arrays(self, prefix: str = "gv/") -> dict[str, np.ndarray]:
        return {prefix + k: np.ascontiguousarray(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "gv/") -> "GlobalVectors | None":
        names = [f.name for f in cls.__dataclass_fields__.values()]
        if not any(prefix + n in arrays for n in names):
            return None
        return cls(**{n: arrays[prefix + n] for n in names})


def surrogate_tokens(pooled: torch.Tensor, src_centers: torch.Tensor, dst_centers: torch.Tensor,
                     m: int = 4, temperature: float = 0.1) -> torch.Tensor:
    """Tokens standing in for the missing modality.

    pooled [B, d] vectors of the present modality; src_centers [P, d] its paired
    global centers; dst_centers [P, d] the paired centers of the missing modality.
    The m most cosine-similar source centers are found and their partners are
    returned, each scaled by its softmax similarity weight times m (uniform
    weights leave the centers unchanged): [B, m', d] with m' = min(m, P).
    """
    m = min(m, src_centers.shape[0])
    sim = F.normalize(pooled.detach(), dim=-1) @ F.normalize(src_centers, dim=-1).T  # [B, P]
    top_sim, top_idx = sim.topk(m, dim=-1)  # [B, m]
    weights = torch.softmax(top_sim / temperature, dim=-1) * m  # [B, m]
    return dst_centers[top_idx] * weights.unsqueeze(-1)  # [B, m, d]
