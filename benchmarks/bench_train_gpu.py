"""Training throughput on one GPU: bare training loops of FedMMModel against ``fedmm run``.

    python benchmarks/bench_train_gpu.py                          # bare loops + default federation, cuda, bf16
    python benchmarks/bench_train_gpu.py --rounds 3 --json r.json # fewer rounds; results also as JSON
    python benchmarks/bench_train_gpu.py --device cpu --steps 2 --preset smoke --rounds 1 -c workers=1
        (CPU dry run of the script itself; figures meaningless)

Bare loop: the model of the run's config (``--preset``, ``-c``), one instance on the device,
batches of ``train.batch_size`` gathered on the device from a synthetic split (paired,
image-only and text-only rows), the loss a fedmm client trains with from round 2 on
(logit-adjusted task loss, modality dropout, the terms :func:`training_terms` builds from a
synthetic broadcast: missing-modality views, representation KD on a public batch, alignment;
global vectors for the surrogate tokens), AdamW from :func:`make_optimizer`, the autocast of
``--amp``. Rows ``bare``: that loop, timed over ``--steps`` steps after ``--warmup`` (device
synchronised); with ``--amp bf16`` also in float32 and with the PyTorch attention.
Row ``train_local``: the project's loop on the same work (a fresh optimizer per 128-row
client (``--client-rows``), the split on the host, as in a round), ``local_epochs`` per call.

Federation: ``python -m fedmm.cli.app run --device DEV --preset P -c train.amp=AMP`` (that is
``fedmm run``) in a subprocess; samples = sum of ``n_train`` x ``train.local_epochs`` over the
clients of a round (metrics.jsonl), time = the round's share of ``wall_s`` (rounds only: data
preparation, the BatchNorm statistics pass and the final evaluation are excluded); "steady"
leaves out round 1 (Triton, cuDNN and allocator warm-up). The verdict compares the steady
federation with the bare loop at ``--amp``: target >= 80% of its samples/s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET = 0.8


def synthetic_split(n: int, cfg, n_classes: int, seed: int = 0):
    """EncodedSplit of ``n`` random rows on the CPU: 70% paired, 15% image-only, 15% text-only."""
    from fedmm.data.encode import EncodedSplit

    g = torch.Generator().manual_seed(seed)
    S, L, V = cfg.data.image_size, cfg.data.max_len, cfg.data.vocab_size
    u = torch.rand(n, generator=g)
    lengths = torch.randint(8, L + 1, (n, 1), generator=g)
    return EncodedSplit(images=torch.randint(0, 256, (n, 1, S, S), dtype=torch.uint8, generator=g),
                        input_ids=torch.randint(5, V, (n, L), generator=g),
                        attention_mask=torch.arange(L)[None] < lengths,
                        has_image=u >= 0.15, has_text=(u < 0.15) | (u >= 0.3),
                        labels=torch.randint(0, n_classes, (n,), generator=g), ids=[str(i) for i in range(n)])


def client_setup(cfg, n_classes: int, device):
    """(model, ClientData, terms, logit adjustment, global vectors, strategy) of a round-2 client."""
    from fedmm.federated.client import ClientData, build_model, training_terms
    from fedmm.federated.mechanisms import balance
    from fedmm.federated.messages import Message
    from fedmm.federated.params import trainable_groups
    from fedmm.federated.strategies import strategy_from_config
    from fedmm.models.surrogate import GlobalVectors

    strategy = strategy_from_config(cfg)
    model = build_model(cfg, cfg.data.vocab_size, n_classes, 0).to(device)
    d, m, k = model.head.d, cfg.train.kd_public_per_round, cfg.fed.n_centers
    train, public = synthetic_split(512, cfg, n_classes, 1), synthetic_split(max(m, 2), cfg, n_classes, 2)
    public.has_image[:] = True
    public.has_text[:] = True
    data = ClientData("bench", 0, train, train.subset(slice(0, 0)), public, [str(c) for c in range(n_classes)])
    rng = np.random.default_rng(0)
    rand = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    gv = GlobalVectors(rand(k, d), rand(k, d), np.arange(k), rng.permutation(k), np.ones((k, n_classes), np.float32),
                       np.ones((k, n_classes), np.float32), rand(k, 2 * d)) if strategy.prototypes else None
    broadcast = Message("broadcast", {"repkd/index": np.arange(m), "repkd/image": rand(m, d),
                                      "repkd/text": rand(m, d)}, {"round": 2})
    adjust = balance.logit_adjustment(train.labels, n_classes, cfg.train.logit_adjust_tau) if strategy.balance else None
    terms = training_terms(model, data, broadcast, strategy, cfg, trainable_groups(model, strategy.spec), adjust)
    return model, data, terms, adjust, gv, strategy


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bare_loop(cfg, n_classes: int, device, amp: str, backend: str, steps: int, warmup: int) -> dict:
    """Samples/s of the bare loop (see the module docstring)."""
    from fedmm.federated.mechanisms.balance import paired_adjustment
    from fedmm.federated.train import autocast_context, batch_loss, make_optimizer

    model, data, terms, adjust, gv, strategy = client_setup(cfg, n_classes, device)
    for gca in model.head.fusion.values():
        gca.backend = backend
    model.train()
    rows = {k: getattr(data.train, k).to(device) for k in ("images", "input_ids", "attention_mask", "has_image",
                                                             "has_text", "labels")}
    adjust = None if adjust is None else adjust.to(device)
    paired = paired_adjustment(adjust, cfg.train, gv)   # as the client step computes it
    opt, gen, bs = make_optimizer(model, cfg.train, device), torch.Generator().manual_seed(0), cfg.train.batch_size
    order = torch.randperm(len(data.train), generator=gen).to(device)

    def step(i: int) -> None:
        start = (i * bs) % (len(order) - bs + 1)
        batch = {k: v[order[start:start + bs]] for k, v in rows.items()}
        with autocast_context(amp, device):
            loss = batch_loss(model, batch, gv, strategy.modality_dropout, gen, terms, adjust, paired)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    sync(device)
    dt = time.perf_counter() - t0
    return {"loop": "bare", "amp": amp, "attention": backend, "steps": steps, "samples": steps * bs,
            "seconds": dt, "samples_per_s": steps * bs / dt, "ms_per_step": dt / steps * 1e3}


def train_local_loop(cfg, n_classes: int, device, amp: str, steps: int, rows: int = 128) -> dict:
    """Samples/s of ``train_local`` on ``rows``-row clients (fresh optimizer each call, as in a round)."""
    from dataclasses import replace

    from fedmm.federated.params import trainable_groups
    from fedmm.federated.train import train_local

    model, data, terms, adjust, gv, strategy = client_setup(cfg, n_classes, device)
    tcfg, client = replace(cfg.train, amp=amp), data.train.subset(slice(0, rows))
    groups = trainable_groups(model, strategy.spec)

    def call(seed: int) -> int:
        return train_local(model, client, tcfg, generator=torch.Generator().manual_seed(seed), device=device, gv=gv,
                           modality_dropout=strategy.modality_dropout, terms=terms, groups=groups,
                           logit_adjust=adjust).steps

    call(0)   # warm-up
    sync(device)
    t0, done, calls = time.perf_counter(), 0, 0
    while done < steps:
        done += call(calls + 1)
        calls += 1
    sync(device)
    dt = time.perf_counter() - t0
    samples = calls * len(client) * tcfg.local_epochs
    return {"loop": "train_local", "amp": amp, "attention": cfg.model.attention_backend, "steps": done,
            "samples": samples, "seconds": dt, "samples_per_s": samples / dt, "ms_per_step": dt / done * 1e3}


def federation(args, workdir: Path, cfg, timeout: float) -> dict:
    """Run ``fedmm run`` in a subprocess and read its per-round throughput from metrics.jsonl."""
    cmd = [sys.executable, "-P", "-m", "fedmm.cli.app", "run", "--device", args.device, "--preset", args.preset,
           "--out", str(workdir), "--name", "bench", "--quiet", "-c", f"train.amp={args.amp}",
           "-c", f"cache={workdir / 'cache'}"]
    cmd += ["--rounds", str(args.rounds)] if args.rounds else []
    for item in args.override:
        cmd += ["-c", item]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"fedmm run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (workdir / "bench" / "metrics.jsonl").read_text().splitlines() if line]
    epochs, per_round, prev = cfg.train.local_epochs, [], 0.0
    for r in sorted({row["round"] for row in rows}):
        clients = [row for row in rows if row["round"] == r and row["client"] != "global"]
        wall = next(row["wall_s"] for row in rows if row["round"] == r and row["client"] == "global")
        per_round.append({"round": r + 1, "samples": sum(int(c["n_train"]) for c in clients) * epochs,
                          "seconds": wall - prev, "clients": len(clients)})
        prev = wall
    steady = per_round[1:] or per_round
    rate = lambda rs: sum(x["samples"] for x in rs) / max(sum(x["seconds"] for x in rs), 1e-9)  # noqa: E731
    return {"loop": "federation", "amp": args.amp, "rounds": per_round, "process_seconds": total,
            "samples_per_s_all": rate(per_round), "samples_per_s": rate(steady), "steady_rounds": len(steady)}


def print_row(r: dict) -> None:
    """Markdown rows of one result (a federation prints a row per round and its steady rate)."""
    if r["loop"] != "federation":
        print(f"| {r['loop']} | {r['amp']} | {r['attention']} | {r['samples']} | {r['seconds']:.2f} | "
              f"{r['samples_per_s']:.0f} | {r['ms_per_step']:.1f} |", flush=True)
        return
    for x in r["rounds"]:
        print(f"| federation round {x['round']} ({x['clients']} clients) | {r['amp']} | auto | {x['samples']} | "
              f"{x['seconds']:.2f} | {x['samples'] / max(x['seconds'], 1e-9):.0f} | - |")
    print(f"| federation, steady ({r['steady_rounds']} rounds) | {r['amp']} | auto | - | - | "
          f"{r['samples_per_s']:.0f} | - |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run")
    p.add_argument("--amp", default="bf16", help="train.amp of every loop: bf16 | none")
    p.add_argument("--preset", default="default")
    p.add_argument("--rounds", type=int, default=0, help="federated rounds (0: the preset's)")
    p.add_argument("--steps", type=int, default=100, help="timed steps of each bare loop")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--client-rows", type=int, default=128, help="rows of the train_local client")
    p.add_argument("-c", dest="override", action="append", default=[], help="config override (bare and run)")
    p.add_argument("--no-federation", action="store_true")
    p.add_argument("--no-bare", action="store_true")
    p.add_argument("--budget", type=float, default=0.0,
                   help="seconds this script may take (0: no limit); the fedmm run gets what is left minus 10 s")
    p.add_argument("--out", help="folder for the run directory (default: a temporary folder, removed)")
    p.add_argument("--json", help="write the results as JSON to this file")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_train_gpu.py needs a CUDA device (or --device cpu for a dry run)", file=sys.stderr)
        return 2
    from fedmm.config import load_config
    from fedmm.data.synth import SYNTH_CLASSES

    cfg = load_config(None, args.override, args.preset)
    n_classes = len(SYNTH_CLASSES)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    print(f"# training throughput | {name} | torch {torch.__version__} | preset {args.preset} | amp {args.amp} | "
          f"batch {cfg.train.batch_size} | local_epochs {cfg.train.local_epochs} | overrides {args.override}",
          flush=True)
    print("\n| loop | amp | attention | samples | seconds | samples/s | ms/step |\n|---|---|---|---|---|---|---|",
          flush=True)
    results, rc = [], 0
    if not args.no_bare:
        variants = [(args.amp, "auto")] + ([("none", "auto"), (args.amp, "torch")] if args.amp != "none" else [])
        jobs = [lambda a=amp, b=backend: bare_loop(cfg, n_classes, args.device, a, b, args.steps, args.warmup)
                for amp, backend in variants]
        jobs.append(lambda: train_local_loop(cfg, n_classes, args.device, args.amp, args.steps, args.client_rows))
        for job in jobs:   # one failing loop is reported; the others (and the federation) still run
            try:
                results.append(job())
                print_row(results[-1])
            except Exception as exc:
                print(f"| FAILED: {type(exc).__name__}: {exc} | | | | | | |", flush=True)
                rc = 1
    if not args.no_federation:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(args.out or tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            left = args.budget - (time.perf_counter() - t_start) - 10 if args.budget > 0 else 24 * 3600.0
            try:
                if left < 30:
                    raise RuntimeError(f"only {left:.0f} s of --budget left: fedmm run not started")
                results.append(federation(args, workdir, cfg, left))
                print_row(results[-1])
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"\nfederation FAILED: {exc}", file=sys.stderr, flush=True)
                rc = 1
    fed = next((r for r in results if r["loop"] == "federation"), None)
    bare = next((r for r in results if r["loop"] == "bare"), None)
    if fed and bare:
        ratio = fed["samples_per_s"] / bare["samples_per_s"]
        print(f"\nfederation (steady) / bare {args.amp} loop: {ratio:.2f} (target >= {TARGET:.2f}) -> "
              f"{'met' if ratio >= TARGET else 'NOT met'}; fedmm run process {fed['process_seconds']:.0f} s, "
              f"all rounds {fed['samples_per_s_all']:.0f} samples/s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main())
