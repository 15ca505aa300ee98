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


POOL_SCRIPT = """
import os, sys, time
from fedmm.engines.workers import WorkerPool

def work(i):
    print(os.getpid(), flush=True)
    time.sleep(120)

if __name__ == "__main__":
    with WorkerPool(2, 1) as pool:
        for _ in pool.run(work, [(0,), (1,)]):
            pass
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:   # a zombie (exited, not yet reaped) is gone too
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_workers_exit_when_the_process_that_started_them_is_killed(tmp_path):
    """SIGKILL of the main process (which no handler sees) must not leave workers training on."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        pids += [int(proc.stdout.readline()) for _ in range(2)]   # both workers inside their job
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "workers outlived the killed main process"
    finally:
        proc.kill()
        for p in pids:   # a failed check leaves no process behind
            if _alive(p):
                os.kill(p, signal.SIGKILL)
