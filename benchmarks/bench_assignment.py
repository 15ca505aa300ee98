"""Linear assignment: fedmm's C++ Jonker-Volgenant vs scipy and lap.lapjv, same run.

    python -m pytest benchmarks/bench_assignment.py --benchmark-only
    python -m pytest benchmarks/bench_assignment.py --benchmark-only -k "n256 or n1024"

Square n x n float64 matrices, uniform on [0, 1), one seeded matrix per n shared by all
solvers (grouped by n); plus n = 1024 with integer costs 0..n-1 (many ties, where lap is
strongest). Before timing, each solver's optimal cost is checked against scipy's. Rounds
shrink with n so that n = 4096 stays at a few solves per solver.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from fedmm.ops.assignment import linear_sum_assignment, linear_sum_assignment_batch

lap = pytest.importorskip("lap")

SIZES = [16, 64, 256, 1024, 4096]


def _fedmm(cost):
    return linear_sum_assignment(cost, backend="cpp")


def _scipy(cost):
    return scipy_lsa(cost)


def _lap(cost):
    _, x, _ = lap.lapjv(cost)
    return np.arange(len(x)), x


SOLVERS = {"fedmm_cpp": _fedmm, "scipy": _scipy, "lap_lapjv": _lap}


@pytest.fixture(scope="module", params=SIZES, ids=[f"n{n}" for n in SIZES])
def cost(request):
    n = request.param
    c = np.random.default_rng(n).random((n, n))  # [n, n] float64, C-contiguous
    return c, c[scipy_lsa(c)].sum()


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_lsa(benchmark, cost, solver):
    c, optimum = cost
    n = len(c)
    fn = SOLVERS[solver]
    r, col = fn(c)
    assert abs(c[r, col].sum() - optimum) <= 1e-9 * n, f"{solver} is not optimal"
    benchmark.group = f"lsa n={n}"
    benchmark.extra_info["n"] = n
    rounds = {16: 2000, 64: 500, 256: 50, 1024: 8, 4096: 3}[n]
    benchmark.pedantic(fn, args=(c,), rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_lsa_integer_costs(benchmark, solver):
    n = 1024
    c = np.random.default_rng(7).integers(0, n, (n, n)).astype(np.float64)  # [n, n], ties
    r, col = SOLVERS[solver](c)
    assert c[r, col].sum() == c[scipy_lsa(c)].sum(), f"{solver} is not optimal"
    benchmark.group = "lsa n=1024 integer costs 0..n-1"
    benchmark.pedantic(SOLVERS[solver], args=(c,), rounds=8, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("solver", ["fedmm_batch", "scipy_loop"])
def test_lsa_batch_64x64x64(benchmark, solver):
    """64 independent 64 x 64 problems: threaded batch call vs a Python loop over scipy."""
    costs = np.random.default_rng(0).random((64, 64, 64))  # [B, n, n]
    if solver == "fedmm_batch":
        def fn():
            return linear_sum_assignment_batch(costs, backend="cpp")
    else:
        def fn():
            return [scipy_lsa(c) for c in costs]
    for c, (r, col) in zip(costs, fn()):
        assert abs(c[r, col].sum() - c[scipy_lsa(c)].sum()) <= 1e-9
    benchmark.group = "lsa batch 64 x (64x64)"
    benchmark.pedantic(fn, rounds=30, iterations=1, warmup_rounds=1)
