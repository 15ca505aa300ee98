"""benchmarks/gpu_suite.sh and its Python parts, on the CPU (their dry-run modes).

The suite times GPU code, so CI cannot run it for real; these tests keep its scripts from
rotting: each benchmark runs at toy sizes with ``--device cpu`` (the attention benchmark in
Triton's interpreter), and the whole suite runs once with ``--cpu-dry-run`` (slow: it also
runs a 3-client, 1-round ``fedmm run``). Figures printed there are meaningless.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
QUIET = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}   # CPU only; one thread (shared CI cores)


def _run(args, timeout=600, **env):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **QUIET, **env}, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_suite_script_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_suite.sh")], check=True)


def test_kmeans_benchmark_dry_run():
    out = _run([BENCH / "bench_kmeans_gpu.py", "--device", "cpu", "--sizes", "200x8x4", "--repeats", "1",
                "--iters", "3"])
    assert "| 200 | 8 | 4 |" in out


def test_attention_benchmark_dry_run_in_the_interpreter():
    out = _run([BENCH / "bench_attention_gpu.py", "--device", "cpu", "--shapes", "2x3x4x16x2", "--dtypes", "fp32",
                "--no-compile"], TRITON_INTERPRET="1")
    assert "-> ok" in out and "| (2, 3, 4, 16, 2) | fp32 | fwd+bwd |" in out


def test_train_benchmark_dry_run_bare_loops(tmp_path):
    out = _run([BENCH / "bench_train_gpu.py", "--device", "cpu", "--no-federation", "--amp", "none", "--steps", "2",
                "--warmup", "1", "--client-rows", "16", "--json", tmp_path / "r.json"])
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(r["loop"], r["amp"], r["attention"]) for r in rows] == [("bare", "none", "auto"),
                                                                      ("train_local", "none", "auto")]
    assert all(r["samples"] > 0 and r["samples_per_s"] > 0 for r in rows)
    assert "| train_local | none | auto |" in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_suite_cpu_dry_run(tmp_path):
    out_dir = tmp_path / "out"
    env = {**os.environ, **QUIET, "OUT": str(out_dir), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BENCH / "gpu_suite.sh"), "--cpu-dry-run"], capture_output=True, text=True,
                          timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out_dir / "summary.txt").read_text()
    assert summary.count(": ok (") == 5, summary
    assert {p.name for p in out_dir.iterdir()} == {"1_env.txt", "2_tests.txt", "3_attention.txt", "4_kmeans.txt",
                                                   "5_train.txt", "train_gpu.json", "summary.txt"}
    fed = [r for r in json.loads((out_dir / "train_gpu.json").read_text()) if r["loop"] == "federation"]
    assert fed and fed[0]["rounds"][0]["samples"] > 0
    assert "kernels interpreted: True" in (out_dir / "1_env.txt").read_text()
