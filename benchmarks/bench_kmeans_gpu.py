"""K-Means timing: the torch backend on the GPU and on the CPU, and FAISS where importable.

    python benchmarks/bench_kmeans_gpu.py                          # default sizes, torch cuda vs cpu (+ faiss)
    python benchmarks/bench_kmeans_gpu.py --sizes 2000x128x16 --iters 10
    python benchmarks/bench_kmeans_gpu.py --device cpu --sizes 300x16x4 --repeats 1   # CPU dry run

Times the fit of :func:`fedmm.ops.kmeans` backends (weighted k-means++ seeding + Lloyd
iterations, ``iters`` of them) on random data [N, d] with k centers: ``torch`` on the GPU
(``kmeans_reference(device="cuda")``, synchronised), ``torch`` on the CPU, and ``faiss`` /
``faiss-gpu`` when the package is importable (FAISS's own seeding and iteration count are the
same ``iters``; its seeding differs). Printed per size: the median over ``repeats`` runs after
one warm-up, in ms, and the GPU's speed-up over the CPU. Also checks that the GPU and CPU
fits reach a comparable objective (weighted inertia within 5%).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

SIZES = [(2_000, 128, 16), (50_000, 128, 64), (200_000, 128, 128)]   # (N, d, k)


def inertia(x: np.ndarray, centers: np.ndarray) -> float:
    """Sum over points of the squared distance to the nearest center (torch, on the CPU, chunked)."""
    xt, ct = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(centers, np.float32))
    return float(sum(torch.cdist(xt[i:i + 65536], ct).min(1).values.pow(2).sum().item()
                     for i in range(0, len(xt), 65536)))


def time_fit(fn, repeats: int, sync: bool) -> tuple[float, np.ndarray]:
    """(median ms over ``repeats`` after one warm-up, centers of the last run)."""
    centers = fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        centers = fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), centers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", help="comma list of NxDxK (default: %s)" % ",".join("x".join(map(str, s)) for s in SIZES))
    p.add_argument("--iters", type=int, default=25, help="Lloyd iterations (fedmm.ops.kmeans default 25)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda", help="cuda; cpu for a dry run (CPU columns only)")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU torch column")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_kmeans_gpu.py needs a CUDA device (or --device cpu for a dry run)", file=sys.stderr)
        return 2
    from fedmm.ops.clustering.dispatch import _faiss_gpu_unavailable, _faiss_unavailable, _kmeans_faiss
    from fedmm.ops.clustering.reference import kmeans_reference

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")] if args.sizes else SIZES
    gpu = args.device == "cuda"
    faiss_cols = [name for name, probe in (("faiss-gpu", _faiss_gpu_unavailable), ("faiss", _faiss_unavailable))
                  if probe() is None and (gpu or name == "faiss")]
    print(f"# k-means | device {torch.cuda.get_device_name() if gpu else 'cpu (dry run)'} | torch {torch.__version__}"
          f" | CPU threads {torch.get_num_threads()} | iters {args.iters}"
          f" | faiss: {', '.join(faiss_cols) or 'not importable'}", flush=True)
    cols = ((["torch cuda ms"] if gpu else []) + ([] if args.no_cpu else ["torch cpu ms"])
            + [f"{c} ms" for c in faiss_cols])
    print("\n| N | d | k | " + " | ".join(cols) + " | cuda x cpu | inertia cuda / cpu |")
    print("|---|---|---|" + "---|" * len(cols) + "---|---|", flush=True)
    ok = True
    for n, d, k in sizes:
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((n, d)) + 3 * rng.standard_normal((k, d))[rng.integers(0, k, n)]).astype(np.float32)
        w = np.ones(n, np.float32)
        res = {}
        if gpu:
            res["torch cuda ms"] = time_fit(lambda: kmeans_reference(x, k, w, args.iters, 0, "cuda"),
                                            args.repeats, True)
        if not args.no_cpu:
            res["torch cpu ms"] = time_fit(lambda: kmeans_reference(x, k, w, args.iters, 0, "cpu"), args.repeats, False)
        for c in faiss_cols:
            res[f"{c} ms"] = time_fit(lambda c=c: _kmeans_faiss(x, k, w, args.iters, 0, gpu=c == "faiss-gpu"),
                                      args.repeats, False)
        speed, ratio = "-", "-"
        if "torch cuda ms" in res and "torch cpu ms" in res:
            speed = f"{res['torch cpu ms'][0] / res['torch cuda ms'][0]:.1f}"
            r = inertia(x, res["torch cuda ms"][1]) / inertia(x, res["torch cpu ms"][1])
            ratio, ok = f"{r:.3f}", ok and abs(r - 1) <= 0.05
        print(f"| {n} | {d} | {k} | " + " | ".join(f"{res[c][0]:.1f}" for c in cols) + f" | {speed} | {ratio} |",
              flush=True)
    if not ok:
        print("inertia of the GPU fit differs from the CPU fit by more than 5%", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
