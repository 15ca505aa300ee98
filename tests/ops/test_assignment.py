"""Linear assignment: the C++ Jonker-Volgenant core against scipy as the oracle.

Sections: (1) >= 10,000 seeded random instances, (2) the cases of scipy's own test suite
(scipy/optimize/tests/test_linear_assignment.py and the shared cases in
scipy/sparse/csgraph/tests/test_matching.py, scipy 1.17), (3) layouts, dtypes and batch,
(4) backend dispatch. C++ tests are skipped only when fedmm._C cannot be imported.
Over 300 lines on purpose: most of it is scipy's own cases, copied as data.
"""
from __future__ import annotations

import logging
import zlib

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

import fedmm.ops.assignment.dispatch as assignment
from fedmm.ops import BackendUnavailableError, backend, linear_sum_assignment
from fedmm.ops.assignment import linear_sum_assignment_batch

try:
    from fedmm import _C  # noqa: F401
    HAVE_CPP = True
except ImportError:
    HAVE_CPP = False
needs_cpp = pytest.mark.skipif(not HAVE_CPP, reason="fedmm._C (C++ core) is not built")


def _solve(cost, maximize, fn):
    """Total cost (float64 sum of the chosen entries), or None if ``fn`` raises ValueError."""
    try:
        r, c = fn(cost, maximize)
    except ValueError:
        return None
    c64 = np.asarray(cost, np.float64)
    k = min(c64.shape)
    assert r.shape == c.shape == (k,)
    assert np.all(np.diff(r) > 0), "row_ind must be strictly increasing"
    assert len(np.unique(c)) == k, "a column is used twice"
    chosen = c64[r, c]
    assert np.all(np.isfinite(chosen)), "a forbidden pair was used"
    return chosen.sum()


def _random_instance(rng: np.random.Generator, kind: str, nr: int, nc: int) -> tuple[np.ndarray, bool]:
    """One seeded instance; integer kinds have many ties, 'span' covers 1e-6 .. 1e9."""
    if kind == "int_ties":
        c = rng.integers(0, 4, (nr, nc)).astype(np.float64)
    elif kind == "int_wide":
        c = rng.integers(-1000, 1001, (nr, nc)).astype(np.float64)
    elif kind == "uniform":
        c = rng.random((nr, nc))
    elif kind == "span":
        c = 10.0 ** rng.uniform(-6, 9, (nr, nc))
    elif kind == "int_forbidden":
        c = rng.integers(0, 20, (nr, nc)).astype(np.float64)
        c[rng.random((nr, nc)) < rng.uniform(0.1, 0.6)] = np.inf
    else:  # span_forbidden
        c = 10.0 ** rng.uniform(-6, 9, (nr, nc))
        c[rng.random((nr, nc)) < 0.3] = np.inf
    maximize = bool(rng.integers(2))
    if maximize:
        c = np.where(np.isinf(c), -np.inf, c)  # forbidden pairs are -inf when maximizing
    if kind in ("int_ties", "span") and rng.integers(2):
        c = c.astype(np.float32)  # read in place as float32
    return c, maximize


KINDS = ["int_ties", "int_wide", "uniform", "span", "int_forbidden", "span_forbidden"]


def _check_against_scipy(cost, maximize, ours, kind):
    ref = _solve(cost, maximize, lambda c, m: scipy_lsa(c, maximize=m))
    got = _solve(cost, maximize, ours)
    assert (ref is None) == (got is None), f"feasibility differs: scipy {ref}, ours {got}"
    if ref is None:
        return 0
    if kind.startswith("int"):
        assert got == ref  # integer costs: optima are exactly equal
    else:
        finite = np.abs(np.asarray(cost, np.float64)[np.isfinite(cost)])
        assert abs(got - ref) <= 1e-12 * finite.max() * min(cost.shape), (got, ref)
    return 1


@needs_cpp
def test_random_instances_match_scipy():
    """10,200 seeded instances (square and rectangular both ways), single and batch calls."""
    rng = np.random.default_rng(20261126)
    instances = []
    for i in range(10_000):
        kind = KINDS[i % len(KINDS)]
        nr, nc = (int(x) for x in rng.integers(1, 13, 2))
        instances.append((kind, *_random_instance(rng, kind, nr, nc)))
    for i in range(200):  # medium sizes exercise row reduction and long augmenting paths
        kind = KINDS[i % len(KINDS)]
        nr, nc = (int(x) for x in rng.integers(20, 70, 2))
        instances.append((kind, *_random_instance(rng, kind, nr, nc)))
    feasible = []
    for kind, cost, maximize in instances:
        feasible.append(_check_against_scipy(
            cost, maximize, lambda c, m: linear_sum_assignment(c, maximize=m, backend="cpp"), kind))
    assert 0.75 * len(instances) < sum(feasible) < len(instances)  # both outcomes are exercised
    # the threaded batch call must reproduce the single calls exactly
    for maximize in (False, True):
        group = [c for (_, c, m), ok in zip(instances[:3000], feasible) if ok and m == maximize]
        batch = linear_sum_assignment_batch(group, maximize=maximize, backend="cpp", n_threads=2)
        for c, (r, col) in zip(group, batch):
            r1, c1 = linear_sum_assignment(c, maximize=maximize, backend="cpp")
            np.testing.assert_array_equal(r, r1)
            np.testing.assert_array_equal(col, c1)


@needs_cpp
@pytest.mark.parametrize("shape", [(200, 200), (257, 130), (90, 311)])
@pytest.mark.parametrize("kind", ["int_ties", "uniform", "span", "int_forbidden"])
def test_larger_instances_match_scipy(shape, kind):
    rng = np.random.default_rng(zlib.crc32(f"{shape}{kind}".encode()))
    cost, maximize = _random_instance(rng, kind, *shape)
    _check_against_scipy(cost, maximize, lambda c, m: linear_sum_assignment(c, maximize=m, backend="cpp"), kind)


def test_every_isa_matches_scipy(isa):
    """The SIMD row kernels of each instruction set (1,200 instances, incl. non-unit strides)."""
    rng = np.random.default_rng(["base", "avx2", "avx512"].index(isa))
    for i in range(1200):
        kind = KINDS[i % len(KINDS)]
        nr, nc = (int(x) for x in rng.integers(1, 40 if i % 10 else 90, 2))
        cost, maximize = _random_instance(rng, kind, nr, nc)
        if i % 7 == 0:
            cost = np.asfortranarray(cost)  # strided rows take the scalar path
        _check_against_scipy(cost, maximize, lambda c, m: linear_sum_assignment(c, maximize=m, backend="cpp"), kind)


# ---- scipy's own test suite, reproduced --------------------------------------------------
# From scipy/optimize/tests/test_linear_assignment.py (scipy 1.17).
BACKENDS = [pytest.param("cpp", marks=needs_cpp), "scipy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_suite_input_shape(backend):
    with pytest.raises(ValueError, match="expected a matrix"):
        linear_sum_assignment([1, 2, 3], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_suite_input_object_and_bool(backend):
    C = [[1, 2, 3], [4, 5, 6]]
    for a, b in [(C, np.asarray(C)), (np.identity(3).astype(bool), np.identity(3))]:
        for x, y in zip(linear_sum_assignment(a, backend=backend), linear_sum_assignment(b, backend=backend)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_suite_input_string(backend):
    with pytest.raises(TypeError, match="Cannot cast array data"):
        linear_sum_assignment(np.identity(3).astype(str), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_scipy_suite_invalid_entries(backend, bad):
    with pytest.raises(ValueError, match="contains invalid numeric entries"):
        linear_sum_assignment(np.diag([1.0, bad, 1.0]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_suite_infeasible(backend):
    I = np.identity(3)
    I[:, 0] = np.inf
    with pytest.raises(ValueError, match="cost matrix is infeasible"):
        linear_sum_assignment(I, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scipy_suite_constant_cost_matrix(backend):
    # scipy issue #11602. scipy asserts its own tie-break (the identity); any permutation is
    # optimal here, so we assert a valid complete assignment of the optimal cost.
    r, c = linear_sum_assignment(np.ones((8, 8)), backend=backend)
    np.testing.assert_array_equal(r, np.arange(8))
    np.testing.assert_array_equal(np.sort(c), np.arange(8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 0), (2, 0), (0, 3)])
def test_scipy_suite_trivial_cost(backend, shape):
    r, c = linear_sum_assignment(np.empty(shape), backend=backend)
    assert len(r) == 0 and len(c) == 0


# From scipy/sparse/csgraph/tests/test_matching.py: linear_sum_assignment_test_cases.
SCIPY_SMALL_CASES = [
    ([[400, 150, 400], [400, 450, 600], [300, 225, 300]], [150, 400, 300]),
    ([[400, 150, 400, 1], [400, 450, 600, 2], [300, 225, 300, 3]], [150, 2, 300]),
    ([[10, 10, 8], [9, 8, 1], [9, 7, 4]], [10, 1, 7]),
    ([[10, 10, 8, 11], [9, 8, 1, 1], [9, 7, 4, 10]], [10, 1, 4]),
    ([[10, np.inf, np.inf], [np.inf, np.inf, 1], [np.inf, 7, np.inf]], [10, 1, 7]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sign", [-1, 1])
@pytest.mark.parametrize("case", range(len(SCIPY_SMALL_CASES)))
def test_scipy_suite_small_inputs(backend, sign, case):
    """scipy's linear_sum_assignment_assertions, for the matrix and its transpose."""
    matrix, expected = SCIPY_SMALL_CASES[case]
    cost = sign * np.array(matrix, dtype=float)
    expected = sign * np.array(expected, dtype=float)
    r, c = linear_sum_assignment(cost, maximize=sign == -1, backend=backend)
    np.testing.assert_array_equal(r, np.sort(r))
    np.testing.assert_array_equal(cost[r, c], expected)
    cost = cost.T
    r, c = linear_sum_assignment(cost, maximize=sign == -1, backend=backend)
    np.testing.assert_array_equal(r, np.sort(r))
    np.testing.assert_array_equal(np.sort(cost[r, c]), np.sort(expected))


@needs_cpp
def test_scipy_suite_many_sparse_inputs():
    """scipy's test_two_methods_give_same_result_on_many_sparse_inputs: 100 cases of 100x100,
    density 0.06, integer costs 1..99, inf elsewhere (about a third are infeasible)."""
    rng = np.random.default_rng(12342309)
    raised = 0
    for _ in range(100):
        dense = np.full((100, 100), np.inf)
        idx = rng.choice(100 * 100, size=600, replace=False)
        dense.flat[idx] = rng.integers(1, 100, 600)
        ref = _solve(dense, False, lambda c, m: scipy_lsa(c, maximize=m))
        got = _solve(dense, False, lambda c, m: linear_sum_assignment(c, maximize=m, backend="cpp"))
        assert (ref is None) == (got is None)
        assert ref == got
        raised += ref is None
    assert 0 < raised < 100


# ---- layouts, dtypes, batch --------------------------------------------------------------
@needs_cpp
def test_strided_and_float32_views_match_contiguous():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 50, (40, 60)).astype(np.float64)
    ref_cost = _solve(base, False, lambda c, m: scipy_lsa(c))
    for view in (base.T, base[::2], base[:, ::3], np.asfortranarray(base), base.astype(np.float32),
                 base.astype(np.int32), base.astype(np.float32)[::-1]):
        expect = _solve(view, False, lambda c, m: scipy_lsa(np.asarray(c, np.float64)))
        got = _solve(view, False, lambda c, m: linear_sum_assignment(c, backend="cpp"))
        assert got == expect
    assert _solve(base, False, lambda c, m: linear_sum_assignment(c, backend="cpp")) == ref_cost


@needs_cpp
def test_returns_int64_and_matches_scipy_pairs_on_unique_optimum():
    rng = np.random.default_rng(2)
    cost = rng.random((30, 45))  # continuous costs: the optimum is unique
    r, c = linear_sum_assignment(cost, backend="cpp")
    rs, cs = scipy_lsa(cost)
    assert r.dtype == np.int64 and c.dtype == np.int64
    np.testing.assert_array_equal(r, rs)
    np.testing.assert_array_equal(c, cs)
    r, c = linear_sum_assignment(cost.T, maximize=True, backend="cpp")
    rs, cs = scipy_lsa(cost.T, maximize=True)
    np.testing.assert_array_equal(r, rs)
    np.testing.assert_array_equal(c, cs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_3d_and_ragged(backend):
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 9, (12, 7, 5)).astype(np.float32)  # [B, rows, cols]
    out = linear_sum_assignment_batch(stack, backend=backend, n_threads=2)
    assert len(out) == 12
    for c, (r, col) in zip(stack, out):
        assert c[r, col].sum() == c[scipy_lsa(c)].sum()
    ragged = [rng.random((n, m)) for n, m in [(3, 4), (6, 2), (1, 1), (0, 4), (9, 9)]]
    out = linear_sum_assignment_batch(ragged, maximize=True, backend=backend)
    for c, (r, col) in zip(ragged, out):
        np.testing.assert_allclose(c[r, col].sum(), c[scipy_lsa(c, maximize=True)].sum(), rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_error_names_instance(backend):
    ok = np.ones((3, 3))
    bad = np.identity(3)
    bad[:, 1] = np.inf
    with pytest.raises(ValueError, match="instance 2: cost matrix is infeasible"):
        linear_sum_assignment_batch([ok, ok, bad, ok], backend=backend)
    with pytest.raises(ValueError, match="instance 1: .*invalid numeric entries"):
        linear_sum_assignment_batch(np.stack([ok, np.diag([1.0, np.nan, 1.0])]), backend=backend)


@needs_cpp
def test_gil_released_during_solve(main_thread_share):
    cost = np.random.default_rng(4).random((1500, 1500))
    assert main_thread_share(lambda: linear_sum_assignment(cost, backend="cpp")) > 0.1  # GIL held: ~0.01


# ---- dispatch ----------------------------------------------------------------------------
@pytest.fixture
def no_extension(monkeypatch):
    """Pretend fedmm._C is missing; dispatch memos are reset before and after."""
    def reset():
        backend.warn_fallback_once.cache_clear()
        assignment._resolve.cache_clear()
    reset()
    monkeypatch.setattr(assignment, "extension_unavailable", lambda: "fedmm._C could not be imported (test)")
    yield
    reset()


def test_auto_falls_back_to_scipy_with_one_log_line(no_extension, caplog):
    cost = np.array([[4.0, 1.0], [2.0, 3.0]])
    with caplog.at_level(logging.WARNING, logger="fedmm.ops"):
        for _ in range(3):
            r, c = linear_sum_assignment(cost)
            np.testing.assert_array_equal(c, [1, 0])
    lines = [rec for rec in caplog.records if "fallback" in rec.getMessage()]
    assert len(lines) == 1 and "scipy" in lines[0].getMessage()
    with pytest.raises(BackendUnavailableError, match="cpp"):
        linear_sum_assignment(cost, backend="cpp")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        linear_sum_assignment(np.ones((2, 2)), backend="lapjv")
