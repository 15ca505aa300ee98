"""Aggregation: fedmm's C++ kernels vs numpy, with a memory-bandwidth yardstick, same run.

    python -m pytest benchmarks/bench_aggregation.py --benchmark-only
    python -m pytest benchmarks/bench_aggregation.py --benchmark-only -k p1M

K = 30 clients x P = 1M and 10M float32 parameters (the 10M case holds about 5 GB at once:
the buffers, one stacked copy for numpy and numpy's temporaries). Groups per (method, P):

- copy:     ``np.copyto`` of the K*P*4 stacked bytes (read + write) -- the yardstick;
- mean:     fedmm (float64 and native accumulation) vs ``w @ np.stack(buffers)``;
- median:   fedmm vs ``np.median(stack, axis=0)``;
- trimmed:  fedmm (trim 0.1) vs ``np.sort(stack, axis=0)[t:K-t].mean(axis=0)``;
- krum:     fedmm scores (no numpy baseline timed).

``fedmm`` uses all cores (threads = hardware concurrency); ``fedmm_1thread`` one thread,
like numpy, which is the fair comparison when other processes share the cores.

numpy's median and sort get the stacked array for free (stacking is not timed for them).
``extra_info["GB/s"]``-style numbers are derived from K*P*4 bytes in benchmarks/README.md.
"""
from __future__ import annotations

import numpy as np
import pytest

from fedmm.ops import aggregate, krum_scores

K = 30
SIZES = {"p1M": 1_000_000, "p10M": 10_000_000}
TRIM = 0.1


@pytest.fixture(scope="module", params=list(SIZES))
def data(request):
    P = SIZES[request.param]
    rng = np.random.default_rng(P)
    bufs = [rng.standard_normal(P, dtype=np.float32) for _ in range(K)]  # K x [P]
    w = rng.random(K) + 0.5
    stack = np.stack(bufs)  # [K, P], for numpy baselines only
    yield request.param, P, bufs, w, stack
    del bufs, stack


def _rounds(P, fast: bool) -> int:
    if P >= 10_000_000:
        return 5 if fast else 2
    return 20 if fast else 3


def _run(benchmark, group, fn, rounds):
    benchmark.group = group
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def test_copy(benchmark, data):
    tag, P, bufs, w, stack = data
    dst = np.empty_like(stack)
    benchmark.extra_info["bytes"] = stack.nbytes
    _run(benchmark, f"mean {tag}", lambda: np.copyto(dst, stack), _rounds(P, True))


@pytest.mark.parametrize("impl", ["fedmm_acc64", "fedmm_acc64_1thread", "fedmm_native", "numpy_stack_matmul"])
def test_mean(benchmark, data, impl):
    tag, P, bufs, w, stack = data
    wn = w / w.sum()
    ref = wn @ stack.astype(np.float64) if P <= 1_000_000 else None
    if impl == "numpy_stack_matmul":
        w32 = wn.astype(np.float32)
        def fn():
            return w32 @ np.stack(bufs)
    else:
        acc = "native" if impl == "fedmm_native" else "float64"
        threads = 1 if impl.endswith("1thread") else None
        def fn():
            return aggregate(bufs, w, "mean", backend="cpp", accumulate=acc, n_threads=threads)
    out = fn()
    if ref is not None:
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    benchmark.extra_info["bytes"] = stack.nbytes
    _run(benchmark, f"mean {tag}", fn, _rounds(P, True))


@pytest.mark.parametrize("impl", ["fedmm", "fedmm_1thread", "numpy_median"])
def test_median(benchmark, data, impl):
    tag, P, bufs, w, stack = data
    if impl.startswith("fedmm"):
        threads = 1 if impl.endswith("1thread") else None
        def fn():
            return aggregate(bufs, method="median", backend="cpp", n_threads=threads)
    else:
        def fn():
            return np.median(stack, axis=0)
    if P <= 1_000_000:
        np.testing.assert_allclose(fn(), np.median(stack, axis=0), rtol=1e-6, atol=1e-7)
    _run(benchmark, f"median {tag}", fn, _rounds(P, impl.startswith("fedmm")))


@pytest.mark.parametrize("impl", ["fedmm", "fedmm_1thread", "numpy_sort"])
def test_trimmed_mean(benchmark, data, impl):
    tag, P, bufs, w, stack = data
    t = int(np.floor(TRIM * K))
    if impl.startswith("fedmm"):
        threads = 1 if impl.endswith("1thread") else None
        def fn():
            return aggregate(bufs, method="trimmed_mean", trim=TRIM, backend="cpp", n_threads=threads)
    else:
        def fn():
            return np.sort(stack, axis=0)[t:K - t].mean(axis=0)
    if P <= 1_000_000:
        ref = np.sort(stack.astype(np.float64), axis=0)[t:K - t].mean(axis=0)
        np.testing.assert_allclose(fn(), ref, rtol=1e-5, atol=1e-6)
    _run(benchmark, f"trimmed_mean {tag}", fn, _rounds(P, impl.startswith("fedmm")))


def test_krum(benchmark, data):
    tag, P, bufs, w, stack = data
    if P > 1_000_000:
        pytest.skip("krum timed at 1M only")
    _run(benchmark, f"krum {tag}", lambda: krum_scores(bufs, 3, backend="cpp"), 3)
