"""Aggregation: hand-computed cases, float64 numpy references, masks, errors, dispatch.

Every behaviour is checked on both backends (``cpp`` is skipped only when fedmm._C cannot
be imported); the references below are written independently of fedmm's numpy backend.
One module over 300 lines on purpose: the references and the cases that use them are read
together.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

import fedmm.ops.aggregation.dispatch as aggregation
from fedmm.ops import BackendUnavailableError, aggregate, backend, krum_scores

try:
    from fedmm import _C  # noqa: F401
    HAVE_CPP = True
except ImportError:
    HAVE_CPP = False
needs_cpp = pytest.mark.skipif(not HAVE_CPP, reason="fedmm._C (C++ core) is not built")
BACKENDS = [pytest.param("cpp", marks=needs_cpp), "numpy"]


# ---- float64 references ------------------------------------------------------------------
def ref_mean(bufs, w):
    w = np.asarray(w, np.float64)
    return (w / w.sum()) @ np.stack([b.astype(np.float64) for b in bufs])  # [P]


def assert_mean_close(got, bufs, w):
    """|got - ref| <= float64 summation error (relative to sum_k |w_k x_k|, so cancellation
    is allowed for) + one rounding to the output dtype."""
    ref = ref_mean(bufs, w)
    scale = ref_mean([np.abs(b) for b in bufs], w)
    bound = 4 * len(bufs) * np.finfo(np.float64).eps * scale + np.spacing(np.abs(ref).astype(got.dtype))
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"


def ref_median(bufs):
    return np.median(np.stack([b.astype(np.float64) for b in bufs]), axis=0)


def ref_trimmed(bufs, trim):
    t = int(np.floor(trim * len(bufs)))
    srt = np.sort(np.stack([b.astype(np.float64) for b in bufs]), axis=0)  # [K, P]
    return srt[t:len(bufs) - t].mean(axis=0)


def assert_trimmed_close(got, bufs, trim):
    """Same middle values as the sorted reference; only the float64 summation order may
    differ (bounded relative to the mean |middle value|), then one rounding to the dtype."""
    t = int(np.floor(trim * len(bufs)))
    srt = np.sort(np.stack([b.astype(np.float64) for b in bufs]), axis=0)  # [K, P]
    ref = srt[t:len(bufs) - t].mean(axis=0)
    scale = np.abs(srt[t:len(bufs) - t]).mean(axis=0)
    bound = 4 * len(bufs) * np.finfo(np.float64).eps * scale + np.spacing(np.abs(ref).astype(got.dtype))
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"


def ref_krum(bufs, f):
    x = np.stack([b.astype(np.float64) for b in bufs])  # [K, P]
    K = len(bufs)
    d = np.array([[((x[a] - x[b]) ** 2).sum() for b in range(K)] for a in range(K)])  # [K, K]
    m = min(max(K - f - 2, 1), K - 1)
    return np.array([np.sort(np.delete(d[a], a))[:m].sum() for a in range(K)])


# ---- hand-computed cases -----------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hand_computed(backend, dtype):
    bufs = [np.array(v, dtype) for v in ([1, 2, 3], [4, 5, 6], [7, 8, 100], [10, -1, 6])]
    out = aggregate(bufs, weights=[1, 1, 2, 0], method="mean", backend=backend)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([(1 + 4 + 14) / 4, (2 + 5 + 16) / 4, (3 + 6 + 200) / 4], dtype))
    # even count: mean of the two middle values
    np.testing.assert_array_equal(aggregate(bufs, method="median", backend=backend), np.array([5.5, 3.5, 6], dtype))
    np.testing.assert_array_equal(aggregate(bufs[:3], method="median", backend=backend), np.array([4, 5, 6], dtype))
    # K=4, trim=0.25 drops one value at each end
    np.testing.assert_array_equal(aggregate(bufs, method="trimmed_mean", trim=0.25, backend=backend),
                                  np.array([5.5, 3.5, 6], dtype))
    # trim=0.2 on K=4 drops floor(0.8) = 0 values: plain mean
    np.testing.assert_array_equal(aggregate(bufs, method="trimmed_mean", trim=0.2, backend=backend),
                                  np.array([5.5, 3.5, 28.75], dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_ignore_clients_and_renormalise(backend):
    bufs = [np.array([1.0, 1.0]), np.array([np.nan, 5.0]), np.array([3.0, 7.0]), None]
    masks = [True, False, True, False]  # client 1 (NaN) and client 3 (None) did not train
    np.testing.assert_array_equal(aggregate(bufs, [1, 100, 3, 5], masks=masks, backend=backend), [2.5, 5.5])
    np.testing.assert_array_equal(aggregate(bufs, masks=masks, method="median", backend=backend), [2.0, 4.0])
    np.testing.assert_array_equal(aggregate(bufs, masks=np.array(masks), method="trimmed_mean", trim=0.4,
                                            backend=backend), [2.0, 4.0])
    scores = krum_scores(bufs, 0, masks=masks, backend=backend)
    np.testing.assert_array_equal(scores, [40.0, np.inf, 40.0, np.inf])  # (3-1)^2 + (7-1)^2


@pytest.mark.parametrize("backend", BACKENDS)
def test_krum_hand_computed(backend):
    bufs = [np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 2.0]), np.array([100.0, 0.0])]
    # K=4, f=1: m = max(4 - 1 - 2, 1) = 1 nearest neighbour
    np.testing.assert_array_equal(krum_scores(bufs, 1, backend=backend), [1.0, 1.0, 4.0, 99.0 ** 2])
    # f=0: m = 2 nearest neighbours
    np.testing.assert_array_equal(krum_scores(bufs, 0, backend=backend), [5.0, 1.0 + 5.0, 4.0 + 5.0, 99.0 ** 2 + 100.0 ** 2])


# ---- random data against the references --------------------------------------------------
SIZES = [(1, 777), (2, 1000), (3, 5003), (4, 129), (7, 4097), (16, 3001), (30, 20011), (33, 513), (64, 1025)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,P", SIZES)
def test_random_against_float64_reference(backend, dtype, K, P):
    rng = np.random.default_rng(K * 100_003 + P)
    bufs = [rng.standard_normal(P).astype(dtype) for _ in range(K)]
    if K >= 4:  # heavy outliers and exact ties, as from Byzantine or untrained clients
        bufs[1][::7] = 1e30
        bufs[2][:] = bufs[3]
    w = rng.random(K) + 0.01
    mean = aggregate(bufs, w, "mean", backend=backend)
    assert mean.dtype == dtype and mean.shape == (P,)
    assert_mean_close(mean, bufs, w)
    # the median is exact: same values, same rounding as the float64 reference
    np.testing.assert_array_equal(aggregate(bufs, method="median", backend=backend), ref_median(bufs).astype(dtype))
    # trims cover t = 0 and large t (sorting network) and 1 <= t <= 8 (threshold kernel)
    for trim in (0.0, 0.05, 0.1, 0.25, 0.49):
        got = aggregate(bufs, method="trimmed_mean", trim=trim, backend=backend)
        assert got.dtype == dtype
        assert_trimmed_close(got, bufs, trim)
    np.testing.assert_allclose(krum_scores(bufs, 1, backend=backend), ref_krum(bufs, 1), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_isa_against_float64_reference(isa, dtype):
    """Each instruction set's kernels: 8/16/32-row register sorts, runtime network, mean, krum."""
    rng = np.random.default_rng(11)
    for K, P in [(5, 1001), (13, 777), (30, 2050), (41, 515)]:
        bufs = [rng.standard_normal(P).astype(dtype) for _ in range(K)]
        bufs[1][::5] = 1e30
        w = rng.random(K) + 0.1
        assert_mean_close(aggregate(bufs, w, backend="cpp"), bufs, w)
        np.testing.assert_array_equal(aggregate(bufs, method="median", backend="cpp"), ref_median(bufs).astype(dtype))
        for trim in (0.0, 0.1, 0.3):
            assert_trimmed_close(aggregate(bufs, method="trimmed_mean", trim=trim, backend="cpp"), bufs, trim)
        np.testing.assert_allclose(krum_scores(bufs, 1, backend="cpp"), ref_krum(bufs, 1), rtol=1e-12)
        poisoned = [b.copy() for b in bufs]
        poisoned[K - 1][P - 1] = np.nan  # last element: the partial tile
        for method in ("mean", "median", "trimmed_mean"):
            with pytest.raises(ValueError, match=f"client {K - 1} has a non-finite value"):
                aggregate(poisoned, method=method, backend="cpp")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [3, 10, 30, 41])
def test_trimmed_mean_ties_exact(backend, dtype, K):
    """Small integers: many ties at the trim thresholds (and all-equal columns, where the
    lower and upper thresholds coincide); sums are exact, so results must be equal."""
    rng = np.random.default_rng(K)
    bufs = [rng.integers(0, 3, 1500).astype(dtype) for _ in range(K)]
    bufs[0][:100] = 7  # one client far above the rest
    for b in bufs:
        b[200:300] = 1  # every client equal
    for t in range(0, (K - 1) // 2 + 1):
        trim = (t + 0.25) / K  # floor(trim * K) == t, and trim < 0.5
        got = aggregate(bufs, method="trimmed_mean", trim=trim, backend=backend)
        np.testing.assert_array_equal(got, ref_trimmed(bufs, trim).astype(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_accumulation(backend):
    rng = np.random.default_rng(7)
    bufs = [rng.standard_normal(10_000).astype(np.float32) for _ in range(9)]
    got = aggregate(bufs, np.arange(1, 10), accumulate="native", backend=backend)
    assert got.dtype == np.float32
    ref = ref_mean(bufs, np.arange(1, 10))
    scale = ref_mean([np.abs(b) for b in bufs], np.arange(1, 10))
    assert np.all(np.abs(got - ref) <= 4 * 9 * np.finfo(np.float32).eps * scale)


@needs_cpp
def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(8)
    bufs = [rng.standard_normal(100_003).astype(np.float32) for _ in range(11)]
    for method in ("mean", "median", "trimmed_mean"):
        one = aggregate(bufs, method=method, backend="cpp", n_threads=1)
        np.testing.assert_array_equal(one, aggregate(bufs, method=method, backend="cpp", n_threads=3))
    np.testing.assert_allclose(krum_scores(bufs, 2, backend="cpp", n_threads=1),
                               krum_scores(bufs, 2, backend="cpp", n_threads=3), rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_list_buffers(backend):
    rng = np.random.default_rng(9)
    base = [rng.standard_normal(2000) for _ in range(5)]
    views = [b[::2] for b in base]
    np.testing.assert_array_equal(aggregate(views, method="median", backend=backend),
                                  ref_median([np.ascontiguousarray(v) for v in views]))


# ---- errors name the client --------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["mean", "median", "trimmed_mean"])
def test_errors_name_the_client(backend, method):
    ok = np.zeros(300, np.float32)
    with pytest.raises(ValueError, match=r"client 2: shape \(299,\) differs"):
        aggregate([ok, ok, np.zeros(299, np.float32)], method=method, backend=backend)
    with pytest.raises(ValueError, match="client 1: dtype float64 differs"):
        aggregate([ok, np.zeros(300), ok], method=method, backend=backend)
    with pytest.raises(ValueError, match="client 0: expected a 1-D buffer"):
        aggregate([np.zeros((2, 150), np.float32), ok], method=method, backend=backend)
    with pytest.raises(TypeError, match="client 1: expected float32 or float64"):
        aggregate([ok, np.zeros(300, np.int32)], method=method, backend=backend)
    for bad, text in [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")]:
        poisoned = ok.copy()
        poisoned[257] = bad
        with pytest.raises(ValueError, match=rf"client 3 has a non-finite value \({text}\) at index 257"):
            aggregate([ok, ok, ok, poisoned, ok], method=method, backend=backend)
    # weight 0 does not hide a NaN
    poisoned = ok.copy()
    poisoned[5] = np.nan
    with pytest.raises(ValueError, match="client 1 has a non-finite value"):
        aggregate([ok, poisoned], weights=[1, 0], method=method, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_argument_errors(backend):
    b = [np.ones(4), np.ones(4)]
    with pytest.raises(ValueError, match="every client is masked out"):
        aggregate(b, masks=[False, False], backend=backend)
    with pytest.raises(ValueError, match="masks has 3 entries for 2 clients"):
        aggregate(b, masks=[True, True, False], backend=backend)
    with pytest.raises(ValueError, match="weight"):
        aggregate(b, weights=[1.0, -1.0], backend=backend)
    with pytest.raises(ValueError, match="sum to 0"):
        aggregate(b, weights=[0.0, 0.0], backend=backend)
    with pytest.raises(ValueError, match="trim"):
        aggregate(b, method="trimmed_mean", trim=0.5, backend=backend)
    with pytest.raises(ValueError, match="unknown method"):
        aggregate(b, method="krum", backend=backend)
    with pytest.raises(ValueError, match="no client buffers"):
        aggregate([], backend=backend)
    with pytest.raises(ValueError, match="client 1 has a non-finite value"):
        krum_scores([np.ones(4), np.array([1.0, np.inf, 0, 0])], 0, backend=backend)


@needs_cpp
def test_gil_released_during_aggregation(main_thread_share):
    bufs = [np.random.default_rng(k).standard_normal(1_000_000).astype(np.float32) for k in range(16)]
    run = lambda: [aggregate(bufs, method=m, backend="cpp", n_threads=1) for m in ("median", "mean")]  # noqa: E731
    assert main_thread_share(run) > 0.1  # GIL held: ~0.01


# ---- dispatch ----------------------------------------------------------------------------
@pytest.fixture
def no_extension(monkeypatch):
    """Pretend fedmm._C is missing; dispatch memos are reset before and after."""
    def reset():
        backend.warn_fallback_once.cache_clear()
        aggregation._resolve.cache_clear()
    reset()
    monkeypatch.setattr(aggregation, "extension_unavailable", lambda: "fedmm._C could not be imported (test)")
    yield
    reset()


def test_auto_falls_back_to_numpy_with_one_log_line(no_extension, caplog):
    bufs = [np.array([1.0, 2.0]), np.array([3.0, 4.0])]
    with caplog.at_level(logging.WARNING, logger="fedmm.ops"):
        for _ in range(3):
            np.testing.assert_array_equal(aggregate(bufs), [2.0, 3.0])
    lines = [r for r in caplog.records if "fallback" in r.getMessage()]
    assert len(lines) == 1 and "numpy" in lines[0].getMessage()
    with pytest.raises(BackendUnavailableError, match="cpp"):
        aggregate(bufs, backend="cpp")
    with pytest.raises(BackendUnavailableError, match="cpp"):
        krum_scores(bufs, 0, backend="cpp")


@pytest.mark.parametrize("accumulate", ["float64", "native"])
def test_every_isa_gives_bit_identical_results(accumulate, use_isa):
    """Aggregates do not depend on the machine's instruction set (no FMA contraction),
    so two coordinators on different CPUs publish the same global state."""
    isas, cap = use_isa
    if len(isas) < 2:
        pytest.skip("only one instruction set on this CPU")
    rng = np.random.default_rng(5)
    bufs = [rng.standard_normal(4099).astype(np.float32) for _ in range(13)]
    w = rng.random(13) + 0.1
    results = {}
    for isa_name in isas:
        cap(isa_name)
        results[isa_name] = [aggregate(bufs, w, accumulate=accumulate, backend="cpp"),
                             aggregate(bufs, method="trimmed_mean", trim=0.2, backend="cpp"),
                             krum_scores(bufs, 2, backend="cpp")]
    for isa_name in isas[1:]:
        for got, want in zip(results[isa_name], results[isas[0]]):
            np.testing.assert_array_equal(got, want, err_msg=f"{isa_name} differs from {isas[0]}")
