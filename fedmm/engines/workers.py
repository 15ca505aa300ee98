"""Where client jobs run: the device (:func:`resolve_device`) and worker processes, so that a
CPU simulation runs independent clients side by side.

Clients of one round do not depend on each other, and small models use cores
poorly through intra-op threads (a 16-image MobileNet step gains little from a
second thread). So on CPU the in-process transport hands each client to one of
``workers`` spawned processes running one torch thread each. Every client job is
seeded by (seed, round, client) alone, so the order in which jobs finish never
changes a result; uploads come back as safetensors + JSON files, like every
other transport, and are validated before the server reads them.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Callable, Iterator

import torch


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (``auto``: CUDA when available, else CPU) names; raises RuntimeError
    when CUDA is requested but no CUDA device is available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def plan_workers(workers: int, threads: int, device: torch.device, n_jobs: int) -> tuple[int, int]:
    """(worker processes, torch threads in each) for ``n_jobs`` client jobs.

    ``workers`` 0 = one per available core; 1 = run in this process. CUDA runs
    in this process (one device, no fork of a CUDA context). ``threads`` 0 =
    the cores divided among the workers.
    """
    if device.type != "cpu":
        return 1, threads
    cores = available_cores()
    n = max(1, min(cores if workers <= 0 else workers, n_jobs))
    return n, threads if threads > 0 else max(1, cores // n)


PARENT_CHECK_S = 1.0   # how often a worker checks that the process that started it is alive


def _exit_with_parent(parent: int) -> None:
    """Exit this worker once the process that started it is gone (e.g. killed with SIGTERM or
    SIGKILL, which the worker never sees): an orphan would otherwise train on, unseen."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()


def submission_order(n: int, costs: list[float] | None = None) -> list[int]:
    """Job indices in the order they are handed to workers: decreasing cost (ties in index
    order), or index order without costs. Longest first keeps the end of a round short."""
    if costs is None:
        return list(range(n))
    if len(costs) != n:
        raise ValueError(f"{len(costs)} costs for {n} jobs")
    return sorted(range(n), key=lambda i: (-costs[i], i))


class WorkerPool:
    """``run(fn, jobs)`` yields ``(index, result)`` as jobs finish; one process pool per run.

    With one worker the jobs run in this process, in order. Functions and their
    arguments must be importable/picklable (module-level functions, dataclasses,
    tensors); they are handed from this process to its own children only.
    """

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable, jobs: list[tuple], costs: list[float] | None = None) -> Iterator[tuple[int, object]]:
        """``(index, fn(*jobs[index]))`` as jobs finish. With workers, jobs are submitted in
        decreasing ``costs`` (when given), so the last to start are the cheapest and no worker
        waits long at the end; the result of each job does not depend on the order."""
        if self.workers <= 1:
            for i, args in enumerate(jobs):
                yield i, fn(*args)
            return
        if self._pool is None:
            # spawn, not fork: the parent's OpenMP/intra-op thread pools do not survive a fork
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.threads,))
        futures: dict[Future, int] = {self._pool.submit(fn, *jobs[i]): i for i in submission_order(len(jobs), costs)}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
