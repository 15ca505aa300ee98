"""Cheap proxy classifiers used to check that synthcxr's modalities are complementary.

Image proxy: 16x16 block means + per-cell texture/blob statistics of the 64x64
image; text proxy: binary bag of unigrams and bigrams; both fed to a
ridge (least-squares) linear classifier, solved in closed form.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F


def image_features(images: np.ndarray) -> np.ndarray:
    """[N, S, S] uint8 -> [N, D] float features (per-image normalised)."""
    x = torch.from_numpy(images).float().unsqueeze(1) / 255.0            # [N,1,S,S]
    x = F.interpolate(x, size=(64, 64), mode="area") if x.shape[-1] != 64 else x
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-6)
    pix = F.avg_pool2d(x, 4).flatten(1)                                   # [N,256]
    blur1 = F.avg_pool2d(x, 3, 1, 1)
    blur2 = F.avg_pool2d(x, 7, 1, 3)
    high = (x - blur1) ** 2
    dog = blur1 - blur2
    feats = [pix, F.avg_pool2d(high, 8).flatten(1), F.max_pool2d(dog, 8).flatten(1),
             F.max_pool2d(-dog, 8).flatten(1)]
    return torch.cat(feats, 1).numpy()


def _tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return words + [a + "_" + b for a, b in zip(words, words[1:])]


def text_features(train_texts: list[str], texts: list[str], max_features: int = 1000) -> np.ndarray:
    """Binary bag of unigrams+bigrams; vocabulary = the most frequent in ``train_texts``."""
    counts: dict[str, int] = {}
    for t in train_texts:
        for tok in set(_tokens(t)):
            counts[tok] = counts.get(tok, 0) + 1
    ranked = sorted(counts, key=lambda k: (-counts[k], k))[:max_features]
    vocab = {tok: i for i, tok in enumerate(ranked)}
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for r, t in enumerate(texts):
        for tok in _tokens(t):
            j = vocab.get(tok)
            if j is not None:
                out[r, j] = 1.0
    return out


def ridge_scores(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_classes: int,
                 lam: float = 300.0) -> np.ndarray:
    """Linear least-squares (ridge) classifier on standardised features; returns test scores [N, C]."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a = torch.from_numpy((xtr - mu) / sd).double()
    b = torch.from_numpy((xte - mu) / sd).double()
    y = F.one_hot(torch.from_numpy(ytr).long(), n_classes).double()
    prior = y.mean(0)
    w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=torch.float64), a.T @ (y - prior))
    return (b @ w + prior).numpy()
