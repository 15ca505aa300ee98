"""Server memory and seconds per round of the in-process engine as the federation grows.

    python benchmarks/bench_scale.py --json scale.json                   # 30,100,300 clients x workers 1,2
    python benchmarks/bench_scale.py --clients 30,60 --workers 1 --rounds 1
    python benchmarks/bench_scale.py --clients 30,300 --workers 2 -c fed.strategy=fedavg

The ``scale`` preset (fedmm/config.py: clients of ~33 rows, ~28 train and ~5 val) resized to each
client count by ``scale_overrides``, so the total samples grow in proportion to the clients and the
image-only / text-only clients keep their share; ``-c key=value`` applies after that, to every
configuration. The data of each count is built once in the cache (``--cache``, default
``$FEDMM_CACHE`` or ~/.cache/fedmm) before any timing. Each (clients, workers) pair then runs in a
child process of this one: ``prepare_federation``, then the round loop over the in-process
transport (``run_rounds``, with ``workers`` client processes of ``--threads`` torch threads each;
1 = clients in the main process), i.e. ``run_simulation`` without the final evaluation, whose cost
grows as clients x test rows (``--evaluate`` runs ``run_simulation`` itself). The clients' model
states (two rounds of ~7.4 MiB each per client) are deleted after each configuration (``--keep``).

Columns: Σ n_train of the clients; seconds of the last round (round 2 by default: the difference
of the rounds' ``wall_s``, so it holds round 1's server step and round 2's client steps) and per
1000 training samples; the speed-up over the 1-worker run of the same count; the main (server)
process's peak RSS (VmHWM: the larger of the child's own reading at its end and the last one
from /proc); its RSS once the data is encoded, and before the last round: as it is, and "live",
after ``gc.collect()`` and glibc's ``malloc_trim`` (memory it still holds, not freed heap kept
for reuse); the largest peak RSS of the client worker processes (VmHWM from /proc every 0.2 s,
benchmarks/proc_memory.py). Checks, per worker count: server peak RSS at the largest count
within 20% of the smallest (the target), and seconds per 1000 samples within 20% (time per
round linear in the samples).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from proc_memory import memory_line, round_seconds, run_child, work_folder

TOLERANCE = 0.2


def config(args, clients: int, workers: int):
    from fedmm.config import load_config, scale_overrides

    return load_config(None, [*([f"cache={args.cache}"] if args.cache else []), f"out={args.out / 'runs'}",
                              f"name=c{clients}-w{workers}", *scale_overrides(clients), f"fed.rounds={args.rounds}",
                              f"threads={args.threads}", "device=cpu", "tracking=none", f"workers={workers}",
                              *args.c], args.preset)


def own_memory() -> dict:
    """The time, and VmRSS and VmHWM of this process in kB."""
    status = Path("/proc/self/status").read_text().splitlines()
    return {"t": time.time(), **{k: next(int(x.split()[1]) for x in status if x.startswith(k + ":"))
                                 for k in ("VmRSS", "VmHWM")}}


def live_memory() -> int:
    """VmRSS in kB after a garbage collection and glibc's malloc_trim (freed heap handed back)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: the figure includes the allocator's free lists
        pass
    return own_memory()["VmRSS"]


def child(args) -> None:
    """One configuration: prepare the data, run the rounds, write times and memory marks."""
    marks = [{"at": "start", **own_memory()}]
    import torch

    from fedmm.engines.local import run_simulation
    from fedmm.engines.loop import NullReporter, ServerContext, run_rounds
    from fedmm.engines.prepare import prepare_federation
    from fedmm.engines.transport import FederationInfo, InProcessTransport
    from fedmm.engines.workers import WorkerPool, plan_workers

    class Marks(NullReporter):
        def start_round(self, r: int, total_rounds: int, n_clients: int) -> None:
            marks.append({"at": f"start of round {r + 1}", **own_memory(), "live": live_memory()})

    clients, workers = (int(x) for x in args.child.split(","))
    cfg = config(args, clients, workers)
    torch.set_num_threads(cfg.threads)
    run_dir, reporter = Path(cfg.out) / cfg.name, Marks()
    fed = prepare_federation(cfg)
    marks.append({"at": "data encoded", **own_memory()})
    n_train = sum(len(c.train) for c in fed.clients)
    if args.evaluate:
        del fed
        run_simulation(cfg, run_dir, reporter=reporter)
    else:
        ctx = ServerContext(cfg, FederationInfo.from_federation(fed), run_dir, reporter)
        run_dir.mkdir(parents=True, exist_ok=True)
        device = torch.device("cpu")
        with WorkerPool(*plan_workers(cfg.workers, cfg.threads, device, len(fed.clients))) as pool:
            run_rounds(ctx, InProcessTransport(fed, cfg, ctx.strategy, run_dir, device, reporter, pool))
    marks.append({"at": "end", **own_memory()})
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    ends = [r["wall_s"] for r in rows if r["client"] == "global"]
    out = {"ends": ends, "n_train": n_train, "n_samples": cfg.data.n_samples, "marks": marks}
    (args.out / f"c{clients}-w{workers}.json").write_text(json.dumps(out))


def run_one(args, clients: int, workers: int, env: dict) -> dict:
    """One configuration in a child process, its process tree watched."""
    name = f"c{clients}-w{workers}"
    argv = [sys.executable, __file__, "--child", f"{clients},{workers}", "--out", str(args.out),
            "--rounds", str(args.rounds), "--preset", args.preset, "--threads", str(args.threads),
            *(["--cache", args.cache] if args.cache else []), *(["--evaluate"] if args.evaluate else []),
            *[x for c in args.c for x in ("-c", c)]]
    started = time.time()
    returncode, procs, res = run_child(argv, env, args.out / f"{name}.log", args.out / f"{name}.json", args.timeout)
    if not args.keep:
        for sub in ("clients", "exchange"):
            shutil.rmtree(args.out / "runs" / name / sub, ignore_errors=True)
    ends, marks = res.get("ends", []), {m["at"]: m for m in res.get("marks", [])}
    per = round_seconds(ends)
    workers_kb = [kb for role, kb, _ in procs.values() if role == "client worker"]
    main_kb = [kb for role, kb, _ in procs.values() if role == "main"] + [marks.get("end", {}).get("VmHWM", 0)]
    last = marks.get(f"start of round {len(ends)}", {}) if len(ends) > 1 else {}
    mib = lambda kb: None if kb is None else round(kb / 1024)  # noqa: E731
    t = {k: m["t"] for k, m in marks.items()}
    first = t.get("start of round 1", 0.0)
    return {"clients": clients, "workers": workers, "returncode": returncode, "total_s": time.time() - started,
            "n_samples": res.get("n_samples"), "n_train": res.get("n_train"), "rounds_s": per,
            "round_s": per[-1] if per else None, "warm_up_only": len(per) == 1,
            "startup_s": t["data encoded"] - t["start"] if res else None,   # imports and data encoding
            "after_rounds_s": t["end"] - first - ends[-1] if ends and first else None,   # statistics pass, pool stop
            "server_peak_mib": mib(max(main_kb)) if res else None,
            "server_data_mib": mib(marks.get("data encoded", {}).get("VmRSS")),
            "server_between_mib": mib(last.get("VmRSS")), "server_live_mib": mib(last.get("live")),
            "worker_peak_mib": mib(max(workers_kb)) if workers_kb else None,
            "memory": memory_line(procs), "log": str(args.out / f"{name}.log")}


def checks(rows: list[dict]) -> list[dict]:
    """Per worker count: server peak RSS and seconds per 1000 samples, largest vs smallest count."""
    out = []
    for w in sorted({r["workers"] for r in rows}):
        ok = sorted((r for r in rows if r["workers"] == w and r["round_s"] is not None), key=lambda r: r["clients"])
        if len(ok) < 2:
            continue
        lo, hi = ok[0], ok[-1]
        rss = hi["server_peak_mib"] / lo["server_peak_mib"]
        per_k = (hi["round_s"] / hi["n_train"]) / (lo["round_s"] / lo["n_train"])
        out.append({"workers": w, "from": lo["clients"], "to": hi["clients"], "server_peak_ratio": rss,
                    "server_peak_met": rss <= 1 + TOLERANCE, "s_per_sample_ratio": per_k,
                    "linear": abs(per_k - 1) <= TOLERANCE})
    return out


def report(rows: list[dict], found: list[dict], args) -> None:
    base = {r["clients"]: r["round_s"] for r in rows if r["workers"] == 1 and r["round_s"]}
    print(f"\npreset {args.preset} resized per count, {args.rounds} round(s), {args.threads} torch thread(s) per "
          f"client process, {' '.join(args.c) or 'no overrides'}{', with the final evaluation' * args.evaluate}\n")
    print("| clients | train samples | workers | s/round | s per 1000 samples | speed-up vs 1 worker "
          "| server peak RSS (MiB) | server RSS: data encoded / between rounds (live) (MiB) "
          "| worker peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["round_s"] is None:
            print(f"| {r['clients']} | - | {r['workers']} | failed (exit {r['returncode']}, see {r['log']}) "
                  "| | | | | |")
            continue
        speed = f"{base[r['clients']] / r['round_s']:.2f}x" if r["clients"] in base and r["workers"] != 1 else "-"
        note = " (round 1: warm-up)" if r["warm_up_only"] else ""
        between = f"{r['server_between_mib']} ({r['server_live_mib']})" if r["server_between_mib"] else "-"
        print(f"| {r['clients']} | {r['n_train']} | {r['workers']} | {r['round_s']:.1f}{note} "
              f"| {1000 * r['round_s'] / r['n_train']:.2f} | {speed} | {r['server_peak_mib']} "
              f"| {r['server_data_mib']} / {between} | {r['worker_peak_mib'] or '-'} |")
    print("\nPeak RSS of every process by role (MiB), and where the child's time went:")
    for r in rows:
        phases = (f"imports + data encoding {r['startup_s']:.0f} s, rounds {sum(r['rounds_s']):.0f} s, "
                  f"after the rounds {r['after_rounds_s'] or 0:.0f} s") if r["startup_s"] is not None else "failed"
        print(f"- {r['clients']} clients, {r['workers']} worker(s): {r['memory']}; {r['total_s']:.0f} s ({phases})")
    print()
    for c in found:
        print(f"workers={c['workers']}, {c['from']} -> {c['to']} clients: "
              f"server peak RSS x{c['server_peak_ratio']:.2f} (target: within {TOLERANCE:.0%}: {'met' if c['server_peak_met'] else 'NOT met'}); seconds per "
              f"sample x{c['s_per_sample_ratio']:.2f} ({'linear' if c['linear'] else 'not linear'} within "
              f"{TOLERANCE:.0%})")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="30,100,300", help="comma-separated client counts")
    p.add_argument("--workers", default="1,2", help="comma-separated client process counts (1 = in the main one)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per configuration; the last one is timed")
    p.add_argument("--preset", default="scale")
    p.add_argument("--threads", type=int, default=1, help="torch threads per client process")
    p.add_argument("-c", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--cache", default="", help="data cache (default: $FEDMM_CACHE or ~/.cache/fedmm)")
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the clients' model states of every run")
    p.add_argument("--evaluate", action="store_true", help="run_simulation with its final evaluation")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for one configuration")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = work_folder(args.out, "bench_scale_")
    if args.child:
        child(args)
        return {}
    counts = sorted(int(x) for x in args.clients.split(","))
    workers = [int(x) for x in args.workers.split(",")]
    from fedmm.engines.prepare import client_root

    for k in counts:   # synthcxr, partition and tokenizer of each count, outside every timing
        t0 = time.time()
        root = client_root(config(args, k, 1))
        print(f"{k} clients: data in {root} ({time.time() - t0:.0f} s)", flush=True)
    rows, env = [], {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for k in counts:
        for w in workers:
            r = run_one(args, k, w, env)
            print(f"{k} clients, {w} worker(s): {'ok' if r['returncode'] == 0 else 'FAILED, see ' + r['log']} "
                  f"in {r['total_s']:.0f} s; rounds {[round(x, 1) for x in r['rounds_s']]} s; "
                  f"server peak {r['server_peak_mib']} MiB", flush=True)
            rows.append(r)
    found = checks(rows)
    report(rows, found, args)
    result = {"rows": rows, "checks": found, "tolerance": TOLERANCE,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
