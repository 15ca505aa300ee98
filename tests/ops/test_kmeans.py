"""Where :func:`fedmm.ops.kmeans` runs: the ``device`` argument and the backend ``auto`` picks.

CPU: ``device=None`` (default) and ``device="cpu"`` give identical results on a machine
without CUDA; a given device keeps ``auto`` on it (CPU: never faiss-gpu; CUDA: faiss-gpu or the
torch path on the GPU, never faiss on the CPU). GPU (skipped without CUDA): the torch path on
the GPU reaches an objective comparable to the CPU's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmm.ops import kmeans as kmeans_fn
from fedmm.ops.clustering import dispatch as kmeans_module, reference

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _data(n=300, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) + 4 * rng.standard_normal((k, d))[rng.integers(0, k, n)]).astype(np.float32)


def _inertia(x, centers):
    return float(((x[:, None, :] - centers[None]) ** 2).sum(-1).min(1).sum())


@pytest.mark.skipif(torch.cuda.is_available(), reason="default device is CUDA here")
def test_default_device_is_the_cpu_without_cuda():
    x = _data()
    a = kmeans_fn(x, 4, backend="torch", seed=1)
    b = kmeans_fn(x, 4, backend="torch", seed=1, device="cpu")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert reference.torch_device(None).type == "cpu"


def test_given_device_restricts_auto(monkeypatch):
    calls = []
    monkeypatch.setattr(kmeans_module, "_faiss_gpu_unavailable", lambda: None)   # pretend both faiss builds exist
    monkeypatch.setattr(kmeans_module, "_faiss_unavailable", lambda: None)
    monkeypatch.setattr(kmeans_module, "_kmeans_faiss",
                        lambda x, k, w, iters, seed, gpu: calls.append(("faiss-gpu" if gpu else "faiss")) or x[:k])
    monkeypatch.setattr(kmeans_module, "kmeans_reference",
                        lambda x, k, w, iters, seed, device=None: calls.append(("torch", str(device))) or x[:k])
    x = _data(40)
    kmeans_fn(x, 3)                       # no device: the previous order, faiss-gpu first
    kmeans_fn(x, 3, device="cpu")         # CPU: faiss (CPU build)
    kmeans_fn(x, 3, device="cuda")        # CUDA: faiss-gpu
    monkeypatch.setattr(kmeans_module, "_faiss_gpu_unavailable", lambda: "no GPU build")
    kmeans_fn(x, 3, device="cuda")        # CUDA without faiss-gpu: torch on the GPU, not faiss on the CPU
    monkeypatch.setattr(kmeans_module, "_faiss_unavailable", lambda: "not installed")
    kmeans_fn(x, 3, device="cpu")         # CPU without faiss: torch on the CPU
    assert calls == ["faiss-gpu", "faiss", "faiss-gpu", ("torch", "cuda"), ("torch", "cpu")]


def test_summaries_cluster_on_the_given_device(monkeypatch):
    from fedmm.federated import summary

    seen = []
    real = summary.kmeans
    monkeypatch.setattr(summary, "kmeans", lambda *a, **kw: seen.append(kw.get("device")) or real(*a, **kw))
    x = _data(60, d=4)
    out = summary.summarize_vectors(x, np.zeros(60, np.int64), 2, 3, 5, seed=0, device="cpu")
    assert seen == ["cpu"] and out["centroids"].shape[1] == 4


@on_gpu
@pytest.mark.gpu
def test_gpu_torch_kmeans_matches_cpu_objective():
    x = _data(20_000, d=32, k=16)
    w = np.ones(len(x), np.float32)
    gpu = reference.kmeans_reference(x, 16, w, 25, 0, "cuda")
    cpu = reference.kmeans_reference(x, 16, w, 25, 0, "cpu")
    assert gpu.shape == cpu.shape == (16, 32)
    assert abs(_inertia(x, gpu) / _inertia(x, cpu) - 1) <= 0.05
    centers, assign = kmeans_fn(x, 16, backend="torch", device="cuda")
    assert centers.shape == (16, 32) and assign.shape == (len(x),)
