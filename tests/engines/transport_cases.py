"""Shared set-up of the transport tests: one small federation and its in-process reference run.

4 clients (1 image-only, 1 text-only, 2 multimodal), 2 rounds, 1 local epoch, one
CPU thread everywhere. The reference run (in-process transport, clients in two
worker processes) is computed once
per test session, under pytest's session temp folder, and reused by every
transport test that compares against it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fedmm.config import load_config
from fedmm.engines.loop import NullReporter
from fedmm.io import load_arrays

OVERRIDES = ["data.n_clients=4", "data.n_image_only=1", "data.n_text_only=1", "fed.rounds=2",
             "train.local_epochs=1", "threads=1", "device=cpu"]
ROUNDS = 2


def small_config(base: Path, name: str, *extra: str):
    """The shared small config; data cached under ``base/cache``, runs under ``base/runs``."""
    return load_config(None, [f"cache={base / 'cache'}", f"out={base / 'runs'}", f"name={name}", *OVERRIDES,
                              *extra], "smoke")


def session_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp() / "transport_cases"
    base.mkdir(parents=True, exist_ok=True)
    return base


def reference_run(tmp_path_factory) -> Path:
    """Run directory of the in-process reference (run once per session)."""
    from fedmm.engines.local import run_simulation

    base = session_base(tmp_path_factory)
    run_dir = base / "runs" / "reference"
    if not (run_dir / "summary.json").exists():
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run_simulation(small_config(base, "reference", "workers=2"), run_dir)
    return run_dir


def final_state(run_dir: Path, rounds: int = ROUNDS) -> dict[str, np.ndarray]:
    return load_arrays(run_dir / "checkpoints" / f"server_round_{rounds:04d}.safetensors")


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over all arrays (names and shapes must agree)."""
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    worst = 0.0
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        if a[k].size:
            worst = max(worst, float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()))
    return worst


def metrics_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


class Interrupt(Exception):
    pass


class KillMidRound(NullReporter):
    """Raises after ``after`` clients of round ``round_idx`` finished: a crash in the middle of a round."""

    def __init__(self, round_idx: int, after: int) -> None:
        self.round_idx, self.after, self.r, self.done = round_idx, after, -1, 0

    def start_round(self, r, total_rounds, n_clients):
        self.r, self.done = r, 0

    def client_done(self, name, meta):
        self.done += 1
        if self.r == self.round_idx and self.done == self.after:
            raise Interrupt
