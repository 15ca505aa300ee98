"""The worker pool: jobs handed out longest first, results keyed by job whatever the order."""
from __future__ import annotations

import os

import pytest

from fedmm.engines.workers import WorkerPool, submission_order


def test_submission_order_is_decreasing_cost_with_ties_in_index_order():
    assert submission_order(4) == [0, 1, 2, 3]
    assert submission_order(5, [1, 3, 2, 3, 0]) == [1, 3, 2, 0, 4]
    with pytest.raises(ValueError, match="2 costs for 3 jobs"):
        submission_order(3, [1, 2])


def _square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_results_are_keyed_by_job_whatever_the_submission_order(workers):
    jobs = [(x,) for x in range(7)]
    costs = [3, 0, 5, 1, 5, 2, 4]
    with WorkerPool(workers, 1) as pool:
        got = dict(pool.run(_square_with_pid, jobs, costs=costs))
    assert sorted(got) == list(range(7))
    assert [got[i][0] for i in range(7)] == [x * x for x in range(7)]
    pids = {pid for _, pid in got.values()}
    assert (pids == {os.getpid()}) == (workers == 1)
