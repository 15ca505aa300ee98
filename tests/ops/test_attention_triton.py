"""Triton gated cross-attention against the float64 explicit-softmax reference.

CPU: the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by
conftest before the first import) on tiny shapes, float32 and float16 (the
interpreter has no bfloat16). GPU: the same checks on realistic shapes in
float32, float16 and bfloat16; skipped without CUDA.

Every check: fresh random inputs (seeded per case), every kernel output buffer
poisoned with NaN before the launches, forward and the gradient of every input
and weight compared with float64 autograd through
``gated_cross_attention_reference`` by relative error ``||x - ref|| / ||ref||``
against a per-dtype tolerance table. Over 300 lines on purpose: the CPU and GPU checks share
the poisoning, the reference and the tolerance table, kept in one place.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
import torch

from fedmm.ops import BackendUnavailableError
from fedmm.ops.attention import gated_cross_attention
from fedmm.ops.attention.reference import gated_cross_attention_reference

kernels = pytest.importorskip("fedmm.kernels")
from fedmm.kernels import _common  # noqa: E402

# Relative-error tolerance per input dtype (fp16/bf16 run with fp32 accumulation).
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
NAMES = ("out", "xq", "xkv", "wq", "wk", "wv", "wo", "wg", "ug", "bg")

on_interpreter = pytest.mark.skipif(
    not kernels.INTERPRETED, reason="CPU tests need TRITON_INTERPRET=1 before fedmm.kernels is imported"
)
on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("exact_fp32")   # tests/conftest.py


@pytest.fixture
def poison(monkeypatch):
    """Make every kernel output buffer start as NaN, so an unwritten element cannot pass."""

    def nan_empty(shape, *, like, dtype=None):
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype or like.dtype)

    monkeypatch.setattr(_common, "empty", nan_empty)


def make_case(B, Lq, Lk, d, heads, dtype, device, fully_masked=(0,), seed=0):
    """Random inputs; batch elements in ``fully_masked`` have no valid key, others at least one."""
    gen = torch.Generator().manual_seed(zlib.crc32(repr((B, Lq, Lk, d, heads, str(dtype), seed)).encode()))
    xq = torch.randn(B, Lq, d, generator=gen, dtype=torch.float64)
    xkv = torch.randn(B, Lk, d, generator=gen, dtype=torch.float64)
    weights = [torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5 for _ in range(6)]
    bg = 0.5 * torch.randn(d, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, Lk, generator=gen) < 0.7
    mask[torch.arange(B), torch.randint(Lk, (B,), generator=gen)] = True
    mask[list(fully_masked)] = False
    dout = torch.randn(B, Lq, d, generator=gen, dtype=torch.float64)
    inputs = [t.to(device, dtype) for t in (xq, xkv, *weights, bg)]
    return inputs, mask.to(device), dout.to(device, dtype)


def run(inputs, mask, dout, heads, fn):
    """Forward ``fn`` and the gradients of all 9 tensors under ``sum(out * dout)``."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(leaves[0], leaves[1], mask, *leaves[2:], heads)
    grads = torch.autograd.grad(out, leaves, dout)
    return (out.detach(), *grads)


def triton_fn(*args):
    return gated_cross_attention(*args, backend="triton")


def reference(inputs, mask, dout, heads):
    return run([t.double() for t in inputs], mask, dout.double(), heads, gated_cross_attention_reference)


def rel_err(x, ref, floor=0.0):
    return ((x.double() - ref).norm() / max(ref.norm().item(), floor)).item()


def check_case(B, Lq, Lk, d, heads, dtype, device, structural_zero=()):
    """Compare every output; ``structural_zero`` names gradients that are exactly zero in exact
    arithmetic (e.g. dWq, dWk when each row sees one key): those are bounded by TOL relative to
    the norm of the Wv gradient instead of their own (zero) norm."""
    inputs, mask, dout = make_case(B, Lq, Lk, d, heads, dtype, device)
    got = run(inputs, mask, dout, heads, triton_fn)
    ref = reference(inputs, mask, dout, heads)
    floor_scale = ref[NAMES.index("wv")].norm().item()
    errors = {}
    for name, x, r in zip(NAMES, got, ref):
        assert x.dtype == dtype and x.shape == r.shape, name
        errors[name] = rel_err(x, r, floor_scale if name in structural_zero else 0.0)
    bad = {k: v for k, v in errors.items() if not v <= TOL[dtype]}  # NaN fails too
    assert not bad, f"relative errors above {TOL[dtype]:g}: {bad}"
    # no key of a fully-masked batch element may receive gradient
    assert torch.equal(got[NAMES.index("xkv")][0], torch.zeros_like(got[NAMES.index("xkv")][0]))


# (B, Lq, Lk, d, heads): batch element 0 is always fully masked, the others partially.
CPU_SHAPES = [
    pytest.param(3, 5, 7, 32, 2, id="basic"),
    pytest.param(2, 19, 150, 64, 4, id="multi_key_block"),  # non-power-of-two; dQ by the second kernel
    pytest.param(2, 70, 20, 32, 8, id="multi_query_block_dh4"),  # K/V matmul-projected; dh < 16 padded
    pytest.param(2, 6, 11, 48, 3, id="d48"),  # d not a power of two (masked tiles)
]


@on_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("B,Lq,Lk,d,heads", CPU_SHAPES)
def test_interpreter_matches_reference(poison, B, Lq, Lk, d, heads, dtype):
    check_case(B, Lq, Lk, d, heads, dtype, "cpu")


@on_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_interpreter_single_query_single_key(poison, dtype):
    # one key per row: softmax is constant, so dWq and dWk vanish in exact arithmetic
    check_case(2, 1, 1, 32, 2, dtype, "cpu", structural_zero=("wq", "wk"))


@on_interpreter
def test_interpreter_narrow_tiles(poison, monkeypatch):
    """A head wider than one value pass (two attention passes per head) and 16-row weight streaming."""
    monkeypatch.setattr(_common, "TILE_BYTES", 16 * 32 * 4)
    cfg = _common.tile_config(9, 12, 32, 1, torch.float32, kernel="fwd")
    assert cfg["BLOCK_DV"] == 16 < cfg["BLOCK_DH"] and cfg["BLOCK_C"] == 16
    check_case(2, 9, 12, 32, 1, torch.float32, "cpu")


def test_tile_overrides_apply_per_kernel(monkeypatch):
    """"rows" overrides reach both row-block kernels, "fwd" / "gate_bwd" only their own."""
    base = _common.tile_config(49, 64, 128, 4, torch.bfloat16, kernel="fwd")
    monkeypatch.setattr(_common, "CONFIG_OVERRIDES", {"rows": {"BLOCK_Q": 16}, "fwd": {"BLOCK_K": 16}})
    fwd = _common.tile_config(49, 64, 128, 4, torch.bfloat16, kernel="fwd")
    gate = _common.tile_config(49, 64, 128, 4, torch.bfloat16, kernel="gate_bwd")
    assert base["BLOCK_Q"] == 64 and base["BLOCK_K"] == 64
    assert (fwd["BLOCK_Q"], fwd["BLOCK_K"]) == (16, 16)
    assert (gate["BLOCK_Q"], gate["BLOCK_K"]) == (16, base["BLOCK_K"])
    with pytest.raises(ValueError, match="row-block kernel"):
        _common.tile_config(49, 64, 128, 4, torch.bfloat16, kernel="attn")


@on_interpreter
def test_interpreter_fully_masked_rows_exact(poison):
    """No valid key: O = 0 exactly, so out = (1 - G) * xq with G = sigmoid(xq Wg + bg)."""
    inputs, mask, dout = make_case(2, 4, 6, 32, 2, torch.float32, "cpu", fully_masked=(0, 1))
    xq, xkv, wq, wk, wv, wo, wg, ug, bg = inputs
    got = run(inputs, mask, dout, 2, triton_fn)
    g = torch.sigmoid(xq.double() @ wg.double() + bg.double())
    assert rel_err(got[0], (1 - g) * xq.double()) <= TOL[torch.float32]
    for name in ("xkv", "wq", "wk", "wv", "wo", "ug"):  # nothing flows through the attention
        assert torch.count_nonzero(got[NAMES.index(name)]) == 0, name


@on_interpreter
def test_dispatch_reaches_kernels_and_validates(monkeypatch):
    inputs, mask, _ = make_case(2, 3, 4, 32, 2, torch.float32, "cpu")
    calls = []
    real = kernels.gated_cross_attention_triton
    monkeypatch.setattr(kernels, "gated_cross_attention_triton", lambda *a: calls.append(1) or real(*a))
    gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], 2, backend="triton")
    assert calls == [1]
    gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], 2, backend="auto")  # CPU: torch path
    assert calls == [1]
    with pytest.raises(BackendUnavailableError, match="float64"):
        gated_cross_attention(inputs[0].double(), inputs[1].double(), mask, *[t.double() for t in inputs[2:]], 2,
                              backend="triton")
    monkeypatch.setattr(kernels, "INTERPRETED", False)  # env var set only after the kernels were built
    with pytest.raises(BackendUnavailableError, match="before fedmm.kernels"):
        gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], 2, backend="triton")


@on_interpreter
def test_interpreter_autocast_runs_in_autocast_dtype(poison):
    """Under autocast, float32 inputs/weights run in the autocast dtype; gradients return as float32."""
    inputs, mask, dout = make_case(2, 5, 7, 32, 2, torch.float32, "cpu")
    with torch.autocast("cpu", dtype=torch.float16):
        got = run(inputs, mask, dout, 2, triton_fn)
    assert got[0].dtype == torch.float16 and all(g.dtype == torch.float32 for g in got[1:])
    ref = reference([t.half() for t in inputs], mask, dout.half(), 2)
    errors = {n: rel_err(x, r) for n, x, r in zip(NAMES, got, ref)}
    assert all(e <= TOL[torch.float16] for e in errors.values()), errors


def test_fp32_dot_precision_follows_torch_setting():
    assert _common.dot_precision(torch.float32) == "ieee"
    torch.set_float32_matmul_precision("high")  # restored by the exact_fp32 fixture
    assert _common.dot_precision(torch.float32) == "tf32"


def test_public_function_rejects_mixed_dtypes():
    inputs, mask, _ = make_case(1, 2, 2, 16, 1, torch.float32, "cpu")
    inputs[3] = inputs[3].double()
    with pytest.raises(TypeError, match="one dtype"):
        kernels.gated_cross_attention_triton(inputs[0], inputs[1], mask, *inputs[2:], 1)


def test_launch_shrinks_tiles_on_out_of_resources():
    from triton.runtime.errors import OutOfResources

    seen = []

    class FakeKernel:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                seen.append((meta["num_stages"], meta["BLOCK_Q"], meta["BLOCK_K"]))
                if meta["BLOCK_K"] > 32 or meta["num_stages"] > 1:
                    raise OutOfResources(300_000, 232_448, "shared memory")
            return launch

    kernel = FakeKernel()
    cfg = dict(num_stages=2, BLOCK_Q=32, BLOCK_K=128)
    _common.launch(kernel, None, (), cfg, shrinkable=("BLOCK_Q", "BLOCK_K"))
    assert seen == [(2, 32, 128), (1, 32, 128), (1, 32, 64), (1, 32, 32)]
    _common.launch(kernel, None, (), cfg, shrinkable=("BLOCK_Q", "BLOCK_K"))  # remembered: one launch
    assert seen[-1] == (1, 32, 32) and len(seen) == 5
    with pytest.raises(OutOfResources):
        _common.launch(kernel, None, (), dict(num_stages=1, BLOCK_Q=16, BLOCK_K=64), shrinkable=("BLOCK_Q",))


# ------------------------------------------------------------------- ahead-of-time compile (no GPU)
SM90_SHARED_LIMIT = 232448  # bytes of shared memory per block on H100
AOT_CASES = [  # (B, Lq, Lk, d, heads, dtype): the benchmark target; several query and key blocks
    (2, 49, 64, 128, 4, "bfloat16"),
    (2, 97, 300, 64, 2, "bfloat16"),
]


def compile_report(cases, arch=90):
    """Run forward and backward through the real launchers on CPU tensors, compiling each kernel
    launch for ``sm_<arch>`` instead of running it; return one dict per compiled kernel.

    Must run in a process where the kernels are not interpreted (no TRITON_INTERPRET).
    """
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    assert not kernels.INTERPRETED
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    types = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.uint8: "u8"}
    report = []

    def fake_launch(kernel, grid, args, cfg, shrinkable, **constants):
        meta = {**cfg, **constants}
        sig, consts = {}, {}
        for name, value in zip(kernel.arg_names, list(args) + [meta[n] for n in kernel.arg_names[len(args):]]):
            if name in meta:
                sig[name], consts[name] = "constexpr", value
            elif isinstance(value, torch.Tensor):
                sig[name] = "*" + types[value.dtype]
            else:
                sig[name] = "fp32" if isinstance(value, float) else "i32"
        options = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        compiled = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", arch, 32), options=options)
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "kernel.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            usage = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True).stdout
        regs, stack = re.search(r"REG:(\d+) STACK:(\d+)", usage).groups()
        report.append(dict(kernel=kernel.fn.__name__, shared=compiled.metadata.shared, regs=int(regs),
                           stack=int(stack), **{k: v for k, v in cfg.items() if k.startswith(("BLOCK", "num"))}))

    _common.launch = fake_launch
    for B, Lq, Lk, d, heads, dtype in cases:
        inputs, mask, dout = make_case(B, Lq, Lk, d, heads, getattr(torch, dtype), "cpu")
        out = run(inputs, mask, dout, heads, kernels.gated_cross_attention_triton)
        assert out[0].shape == (B, Lq, d)
    return report


@pytest.mark.skipif(
    not (Path(__import__("triton").__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists(),
    reason="triton's bundled CUDA toolchain (ptxas) not present",
)
def test_kernels_compile_for_sm90():
    """Every kernel the launchers use compiles for H100 (sm_90) within its shared memory.

    Catches what the interpreter cannot (Triton scoping and typing rules, tile-size limits);
    register spills are reported in the output, not asserted.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, __file__, "--sm90-report"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print("\n".join(map(str, report)))
    kinds = {r["kernel"] for r in report}
    assert kinds == {"_gca_fwd_kernel", "_gca_bwd_gate_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel"}
    assert all(r["shared"] <= SM90_SHARED_LIMIT for r in report), report


if __name__ == "__main__" and sys.argv[1:] == ["--sm90-report"]:
    print(json.dumps(compile_report(AOT_CASES)))


# ---------------------------------------------------------------------------------------- GPU
GPU_SHAPES = [
    pytest.param(4, 49, 64, 128, 4, id="model_default"),
    pytest.param(3, 1, 1, 64, 1, id="single_token"),
    pytest.param(2, 97, 300, 64, 2, id="non_pow2"),
    pytest.param(2, 512, 512, 128, 8, id="max_len_d128"),
    pytest.param(2, 200, 512, 256, 8, id="d256_h8"),
    pytest.param(2, 33, 77, 256, 1, id="d256_single_head"),
    pytest.param(2, 17, 45, 128, 32, id="dh4"),
    pytest.param(2, 512, 31, 64, 64, id="dh1"),
]


@on_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B,Lq,Lk,d,heads", GPU_SHAPES)
def test_gpu_matches_reference(poison, B, Lq, Lk, d, heads, dtype):
    zeros = ("wq", "wk") if Lk == 1 else ()
    check_case(B, Lq, Lk, d, heads, dtype, "cuda", structural_zero=zeros)


@on_gpu
@pytest.mark.gpu
def test_gpu_auto_dispatch_uses_triton(monkeypatch):
    inputs, mask, _ = make_case(2, 5, 6, 64, 2, torch.bfloat16, "cuda")
    calls = []
    real = kernels.gated_cross_attention_triton
    monkeypatch.setattr(kernels, "gated_cross_attention_triton", lambda *a: calls.append(1) or real(*a))
    gated_cross_attention(inputs[0], inputs[1], mask, *inputs[2:], 2)
    assert calls == [1]
