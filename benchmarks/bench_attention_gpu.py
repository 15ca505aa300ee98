"""GPU benchmark of gated cross-attention: eager PyTorch vs torch.compile vs Triton.

    python benchmarks/bench_attention_gpu.py            # all shapes, bf16 and fp32
    python benchmarks/bench_attention_gpu.py --quick    # target shape only, bf16 only
    python benchmarks/bench_attention_gpu.py --no-compile
    python benchmarks/bench_attention_gpu.py --shapes 1024x49x64x128x4 --dtypes fp16
    python benchmarks/bench_attention_gpu.py --sweep    # Triton tile variants at the target shape, bf16
    TRITON_INTERPRET=1 python benchmarks/bench_attention_gpu.py --device cpu --shapes 2x5x7x32x2 --no-compile
        (CPU dry run of the script itself through Triton's interpreter; timings meaningless)

Self-checking: before any timing, the Triton path (forward and the gradients of
all nine inputs) is compared with a float64 reference on a batch slice of every
benchmarked shape; the run stops if a relative error exceeds the tolerance.
Then, in the same process, each implementation is timed (median of
``triton.testing.do_bench``, L2 flushed between runs) forward (no grad) and
forward+backward (gradients of every input and weight). Printed per row: ms,
speed-up of Triton over eager and over torch.compile, achieved TFLOP/s and GB/s.

FLOPs count the matmuls of docs/ARCHITECTURE.md §4 (forward: Q, K, V, Wg, QK^T, AV, Wo, Ug;
forward+backward = 3x forward). GB/s uses compulsory traffic only: forward reads
xq, xkv, mask and the weights and writes out; forward+backward adds reading
dout, xq, xkv and writing dxq, dxkv and the weight gradients.
"""
from __future__ import annotations

import argparse
import datetime
import sys

import torch

SHAPES = [  # (B, Lq, Lk, d, heads)
    (256, 49, 64, 128, 4),
    (512, 49, 128, 256, 8),
    (4096, 49, 64, 128, 4),
]
TARGET = (4096, 49, 64, 128, 4)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def make_inputs(B, Lq, Lk, d, heads, dtype, seed=0, device="cuda"):
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(device=device, generator=gen)
    xq = torch.randn(B, Lq, d, **kw)
    xkv = torch.randn(B, Lk, d, **kw)
    weights = [torch.randn(d, d, **kw) / d**0.5 for _ in range(6)]
    bg = 0.5 * torch.randn(d, **kw)
    mask = torch.rand(B, Lk, **kw) < 0.8
    mask[:, 0] = True
    mask[0] = False  # one batch element with no valid key
    dout = torch.randn(B, Lq, d, **kw)
    return [t.to(dtype) for t in (xq, xkv, *weights, bg)], mask, dout.to(dtype)


def grads_of(fn, inputs, mask, heads, dout):
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = fn(leaves[0], leaves[1], mask, *leaves[2:], heads)
    return (out.detach(), *torch.autograd.grad(out, leaves, dout))


def self_check(shapes, dtypes, device, slice_b=32, verbose=True) -> bool:
    from fedmm.kernels import gated_cross_attention_triton
    from fedmm.ops.attention.reference import gated_cross_attention_reference

    names = ("out", "xq", "xkv", "wq", "wk", "wv", "wo", "wg", "ug", "bg")
    ok = True
    for B, Lq, Lk, d, heads in shapes:
        for dt_name in dtypes:
            dtype = DTYPES[dt_name]
            inputs, mask, dout = make_inputs(min(B, slice_b), Lq, Lk, d, heads, dtype, seed=1, device=device)
            got = grads_of(gated_cross_attention_triton, inputs, mask, heads, dout)
            ref = grads_of(gated_cross_attention_reference, [t.double() for t in inputs], mask, heads, dout.double())
            errs = {n: ((g.double() - r).norm() / r.norm()).item() for n, g, r in zip(names, got, ref)}
            worst = max(errs, key=lambda n: errs[n] if errs[n] == errs[n] else float("inf"))
            good = all(e <= TOL[dtype] for e in errs.values())
            ok &= good
            if verbose or not good:
                print(f"check B={min(B, slice_b)} Lq={Lq} Lk={Lk} d={d} h={heads} {dt_name}: "
                      f"max rel err {errs[worst]:.2e} ({worst}), tol {TOL[dtype]:g} -> {'ok' if good else 'FAIL'}",
                      flush=True)
    return ok


def flops_fwd(B, Lq, Lk, d, heads):
    return 2 * B * (4 * Lq * d * d + 2 * Lk * d * d + 2 * Lq * Lk * d)


def bytes_moved(B, Lq, Lk, d, heads, es, backward):
    fwd = es * (2 * B * Lq * d + B * Lk * d + 6 * d * d + d) + B * Lk
    if not backward:
        return fwd
    return fwd + es * (3 * B * Lq * d + 2 * B * Lk * d + 6 * d * d + d)


def time_impls(shape, dtype, impls, bench, device):
    heads = shape[-1]
    inputs, mask, dout = make_inputs(*shape, dtype, device=device)
    leaves = [t.detach().requires_grad_() for t in inputs]
    results = {}
    for name, fn in impls.items():
        def fwd():
            with torch.no_grad():
                fn(inputs[0], inputs[1], mask, *inputs[2:], heads)

        def fwd_bwd():
            out = fn(leaves[0], leaves[1], mask, *leaves[2:], heads)
            torch.autograd.grad(out, leaves, dout)

        results[name] = {"fwd": bench(fwd), "fwd+bwd": bench(fwd_bwd)}
    return results


SWEEP = [  # fedmm.kernels._common.CONFIG_OVERRIDES variants timed by --sweep
    {},
    {"rows": {"BLOCK_Q": 32}},
    {"rows": {"BLOCK_Q": 32, "num_warps": 4}},
    {"rows": {"BLOCK_Q": 64, "num_warps": 4}},
    {"rows": {"num_stages": 1}},
    {"attn_bwd": {"BLOCK_Q": 32}},
    {"attn_bwd": {"num_warps": 8}},
    # static sm_90 compile (benchmarks/README.md): these cut register spills at the target shape
    {"fwd": {"BLOCK_K": 32}},
    {"fwd": {"BLOCK_K": 32, "BLOCK_C": 64}},
    {"gate_bwd": {"BLOCK_K": 32, "BLOCK_C": 32}},
    {"fwd": {"BLOCK_K": 32, "BLOCK_C": 64}, "gate_bwd": {"BLOCK_K": 32, "BLOCK_C": 32}},
]


def sweep(bench, device, shape, dt_name) -> None:
    """Time the Triton path at ``shape`` under each tile override of SWEEP."""
    from fedmm.kernels import _common, gated_cross_attention_triton

    print(f"\nTriton tile variants, shape {shape}, {dt_name}", flush=True)
    print("| override | fwd ms | fwd+bwd ms |\n|---|---|---|", flush=True)
    for override in SWEEP:
        _common.CONFIG_OVERRIDES.clear()
        _common.CONFIG_OVERRIDES.update(override)
        try:
            if not self_check([shape], [dt_name], device, verbose=False):
                print(f"| {override} | self-check FAILED | |", flush=True)
                continue
            res = time_impls(shape, DTYPES[dt_name], {"triton": gated_cross_attention_triton}, bench, device)
            print(f"| {override} | {res['triton']['fwd']:.3f} | {res['triton']['fwd+bwd']:.3f} |", flush=True)
        except Exception as exc:  # e.g. a variant that does not compile
            print(f"| {override} | error: {type(exc).__name__}: {exc} | |", flush=True)
        finally:
            _common.CONFIG_OVERRIDES.clear()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="target shape and bf16 only")
    p.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16, fp16, fp32")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--sweep", action="store_true", help="only time Triton tile variants (first shape and dtype; default target, bf16)")
    p.add_argument("--shapes", help="comma list of BxLqxLkxDxHEADS (default: the three benchmark shapes)")
    p.add_argument("--rep-ms", type=int, default=200, help="do_bench measuring time per case")
    p.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run with TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_attention_gpu.py needs a CUDA device", file=sys.stderr)
        return 2
    import time

    import triton
    import triton.testing

    from fedmm.kernels import gated_cross_attention_triton
    from fedmm.ops.attention.reference import gated_cross_attention_torch

    shapes = [TARGET] if args.quick or args.sweep else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtypes = ["bf16"] if (args.quick or args.sweep) and args.dtypes == "bf16,fp32" else args.dtypes.split(",")
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU dry run (interpreter)"
    print(f"# {gpu} | torch {torch.__version__} | triton {triton.__version__} | "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | argv: {' '.join(sys.argv[1:])}",
          flush=True)
    def bench(fn):
        if args.device == "cuda":
            return triton.testing.do_bench(fn, warmup=50, rep=args.rep_ms, return_mode="median")
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    if args.sweep:
        sweep(bench, args.device, shapes[0], dtypes[0])
        return 0
    if not self_check(shapes, dtypes, args.device):
        print("self-check FAILED: not timing", file=sys.stderr)
        return 1

    impls = {"eager": gated_cross_attention_torch}
    if not args.no_compile:
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        impls["compile"] = torch.compile(gated_cross_attention_torch, dynamic=False)
    impls["triton"] = gated_cross_attention_triton

    print("\n| shape (B, Lq, Lk, d, h) | dtype | pass | " + " | ".join(f"{n} ms" for n in impls)
          + " | x eager | x compile | triton TFLOP/s | triton GB/s |")
    print("|---|---|---|" + "---|" * len(impls) + "---|---|---|---|", flush=True)
    verdicts = []
    for shape in shapes:
        for dt_name in dtypes:
            dtype = DTYPES[dt_name]
            res = time_impls(shape, dtype, impls, bench, args.device)
            for mode in ("fwd", "fwd+bwd"):
                t = {n: res[n][mode] for n in impls}
                tri = t["triton"]
                flops = flops_fwd(*shape) * (3 if mode == "fwd+bwd" else 1)
                nbytes = bytes_moved(*shape, dtype.itemsize, mode == "fwd+bwd")
                x_comp = f"{t['compile'] / tri:.2f}" if "compile" in t else "-"
                print(f"| {shape} | {dt_name} | {mode} | " + " | ".join(f"{t[n]:.3f}" for n in impls)
                      + f" | {t['eager'] / tri:.2f} | {x_comp} | {flops / tri / 1e9:.1f} | {nbytes / tri / 1e6:.0f} |",
                      flush=True)
                if shape == TARGET and dtype == torch.bfloat16:
                    need = {"fwd": [("eager", 5.0)], "fwd+bwd": [("eager", 4.0), ("compile", 3.0)]}[mode]
                    verdicts += [(mode, ref, goal, t[ref] / tri) for ref, goal in need if ref in t]
    if verdicts:
        print("\ntargets (bf16, shape %s):" % (TARGET,))
        for mode, ref, goal, got in verdicts:
            print(f"  {mode:8s} >= {goal:.0f}x {ref}: {got:.2f}x -> {'met' if got >= goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
