"""Seconds per round and peak memory of the same federation over every path, in one run.

    python benchmarks/bench_round.py                                # 4 clients, 3 rounds, smoke preset
    python benchmarks/bench_round.py --paths bare,local,flower --rounds 2 --json r.json
    python benchmarks/bench_round.py --paths all                    # also Flower's stock per-message ClientApp

One federation (``--preset``, ``--clients``, ``--rounds``, ``-c key=value``; one torch thread per
client process, CPU), its data prepared once, then each path in a child process of this one:

  bare      a loop calling the client step (``client_round``) for each client in turn, then the
            server step (``server_round``); no engine, transport, checkpoint or metrics
  bare2     the same with the clients in 2 processes (what the parallel paths are compared with)
  local     ``run_simulation`` over the in-process engine, ``workers=1`` (clients in turn)
  local2    the same with the default ``workers=0`` (one process per core: 2 here)
  files     the file exchange (safetensors + JSON through a CLIENT_ROOT), clients in turn
  flower    SuperLink + 4 SuperNodes on 127.0.0.1 with TLS, each with its long-lived ClientApp
            process (``--isolation process``), ``flwr run``: ``workers=0``, so the ServerApp keeps
            as many TRAIN messages out as there are cores (2 here), the slowest clients first
  flower-stock  the same with Flower's own ``subprocess`` isolation (a new ClientApp process per message)

Seconds per round: the differences of the rounds' end times (``wall_s`` in metrics.jsonl,
taken when a round's uploads are in, so a round holds the previous round's server step and its
own client steps); "steady" is the mean over rounds 2.. (round 1 holds warm-up and, for the
long-lived ClientApps, encoding the data once). Overhead: steady seconds minus those of ``bare``
(clients in turn) or ``bare2`` (clients side by side). Peak RSS: VmHWM of every process of the
child's tree (read from /proc every 0.2 s), by role. Every path's final global state is compared
with bare's (max abs difference; 0 = bit for bit). Data preparation, the BatchNorm statistics
pass and the final evaluation are outside the rounds' times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from proc_memory import cpu_line, memory_line, round_seconds, run_child, work_folder

PATHS = ("bare", "bare2", "local", "local2", "files", "flower")
ALL_PATHS = PATHS + ("flower-stock",)



def config(args, path: str):
    from fedmm.config import load_config

    workers = {"bare2": 2, "local2": 0, "flower": 0, "flower-stock": 0}.get(path, 1)   # flower: in flight = cores
    return load_config(None, [f"cache={args.out / 'cache'}", f"out={args.out / 'runs'}", f"name={path}",
                              f"data.n_clients={args.clients}", "data.n_image_only=1", "data.n_text_only=1",
                              f"fed.rounds={args.rounds}", "threads=1", "device=cpu", "tracking=none",
                              f"workers={workers}", *args.c], args.preset)


def _client(data, broadcast, cfg, strategy, store_dir: str, vocab: int):
    import torch

    from fedmm.engines.store import ClientStore
    from fedmm.federated.client import client_round

    torch.set_num_threads(1)
    store, r = ClientStore(store_dir), int(broadcast.meta["round"])
    upload, state = client_round(data, broadcast, cfg, strategy, store.read(r - 1) if r > 0 else None, vocab,
                                 torch.device("cpu"))
    if state is not None:
        store.write(state, r)
    return upload


def _canonical(msg):
    """The message with numpy's own dtype objects (an unpickled array carries a copy, which the
    compiled aggregation refuses)."""
    import numpy as np

    from fedmm.federated.messages import Message

    return Message(msg.kind, {k: v.view(np.dtype(v.dtype.str)) for k, v in msg.arrays.items()}, msg.meta)


def run_bare(args, path: str) -> dict:
    """The bare loop (clients in turn, or in 2 spawned processes for ``bare2``); returns round end times."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from fedmm.engines.local import ServerContext
    from fedmm.engines.prepare import prepare_federation
    from fedmm.engines.transport import FederationInfo
    from fedmm.federated.mechanisms import bn_stats
    from fedmm.federated.server import server_round

    cfg = config(args, path)
    fed = prepare_federation(cfg)
    run_dir = Path(cfg.out) / cfg.name
    ctx = ServerContext(cfg, FederationInfo.from_federation(fed), run_dir)
    state, _ = ctx.start(resume=False, announce=False)
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) if path == "bare2" else None

    def clients(broadcast):
        jobs = [(d, broadcast, cfg, ctx.strategy, str(run_dir / "clients" / d.name), fed.vocab_size)
                for d in fed.clients]
        if pool is None:
            return [_client(*job) for job in jobs]
        return [_canonical(f.result()) for f in [pool.submit(_client, *job) for job in jobs]]

    if pool is not None:   # start the processes outside the timed rounds, as the engine's pool is
        list(pool.map(abs, range(2)))
    t0, ends = time.time(), []
    for _ in range(cfg.fed.rounds):
        uploads = clients(ctx.next_broadcast(state))
        ends.append(time.time() - t0)
        state, _ = server_round(state, uploads, ctx.strategy, cfg, ctx.head, ctx.info.n_public, ctx.info.multilabel)
    if ctx.needs_statistics(state):   # as finish_statistics, so the final states compare
        uploads = clients(state.broadcast({"strategy": ctx.strategy.name, "task": bn_stats.TASK}))
        state.shared.update({k: v for k, v in bn_stats.pooled_statistics(uploads).items() if k in state.shared})
    if pool is not None:
        pool.shutdown()
    from fedmm.engines.wire import save_message

    save_message(state.broadcast(), run_dir / "final")
    return {"ends": ends, "final": str(run_dir / "final")}


def run_engine(args, path: str) -> dict:
    """``run_simulation`` over the path's transport (Flower: :func:`run_flower_simulation`, the rounds
    part of it, so that the isolation can be chosen); round end times from metrics.jsonl."""
    from fedmm.engines.local import run_simulation

    cfg = config(args, path)
    run_dir = Path(cfg.out) / cfg.name
    if path.startswith("flower"):
        from fedmm.config import to_toml
        from fedmm.engines.flower.launch import run_flower_simulation
        from fedmm.engines.local import ServerContext
        from fedmm.engines.prepare import prepare_federation
        from fedmm.engines.transport import FederationInfo

        fed = prepare_federation(cfg)
        ctx = ServerContext(cfg, FederationInfo.from_federation(fed), run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))
        run_flower_simulation(ctx, fed, False, args.timeout,
                              isolation="subprocess" if path == "flower-stock" else "process")
    else:
        run_simulation(cfg, run_dir, transport={"local2": "local"}.get(path, path))
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    ends = [r["wall_s"] for r in rows if r["client"] == "global"]
    return {"ends": ends, "final": str(run_dir / "checkpoints" / f"server_round_{cfg.fed.rounds:04d}")}


def child(args) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = (run_bare if args.child.startswith("bare") else run_engine)(args, args.child)
    (args.out / f"{args.child}.json").write_text(json.dumps(out))


def max_abs_diff(a_stem: str, b_stem: str) -> float:
    import numpy as np

    from fedmm.engines.wire import load_message

    a, b = load_message(Path(a_stem), "broadcast").arrays, load_message(Path(b_stem), "broadcast").arrays
    if set(a) != set(b):
        return float("nan")
    return max((float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a if a[k].size),
               default=0.0)


def run_path(args, path: str, env: dict) -> dict:
    """One path in a child process, its process tree watched; per-round seconds and peak RSS."""
    argv = [sys.executable, __file__, "--child", path, "--out", str(args.out), "--clients", str(args.clients),
            "--rounds", str(args.rounds), "--preset", args.preset, "--timeout", str(args.timeout),
            *[x for c in args.c for x in ("-c", c)]]
    started = time.time()
    returncode, procs, res = run_child(argv, env, args.out / f"{path}.log", args.out / f"{path}.json")
    per = round_seconds(res.get("ends", []))
    return {"rounds_s": per, "steady_s": (sum(per[1:]) / len(per[1:])) if len(per) > 1 else None,
            "final": res.get("final"), "returncode": returncode, "total_s": time.time() - started,
            "peak_rss_mib": {str(pid): [role, round(kb / 1024)] for pid, (role, kb, _) in procs.items()},
            "memory": memory_line(procs), "cpu": cpu_line(procs), "detail": flower_detail(Path(res["final"]).parents[1])
            if path.startswith("flower") and res.get("final") else ""}


def flower_detail(run_dir: Path) -> str:
    """Mean seconds of the long-lived ClientApps' training tasks after the first: waiting for the
    message, the client steps, sending the reply (from their logs)."""
    import re

    rows = []
    for log in (run_dir / "flower" / "logs").glob("clientapp_*.log"):
        found = re.findall(r"task (\d+) \(train\) completed in [0-9.]+ s: pull ([0-9.]+) s, ClientApp ([0-9.]+) s, "
                           r"push ([0-9.]+) s", log.read_text(errors="replace"))
        rows += [tuple(map(float, f[1:])) for f in found if int(f[0]) > 1]
    if not rows:
        return ""
    mean = [sum(col) / len(rows) for col in zip(*rows)]
    return f"message in {mean[0]:.2f} s, client steps {mean[1]:.2f} s, reply out {mean[2]:.2f} s (mean per task)"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, from {ALL_PATHS}, or 'all'")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--preset", default="smoke")
    p.add_argument("-c", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for one path")
    p.add_argument("--repeat", type=int, default=1, help="run the paths this many times, interleaved; "
                   "the table shows the fastest steady s/round of each path (least disturbed by other load)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = work_folder(args.out, "bench_round_")
    if args.child:
        child(args)
        return {}
    paths = list(ALL_PATHS) if args.paths == "all" else args.paths.split(",")
    unknown = [x for x in paths if x not in ALL_PATHS]
    if unknown:
        p.error(f"unknown paths {unknown}; choose from {ALL_PATHS}")
    from fedmm.engines.prepare import prepare_federation

    prepare_federation(config(args, "bare"))   # data generated once, outside every timing
    results, env = {}, {**os.environ, "OMP_NUM_THREADS": "1"}
    for rep in range(args.repeat):
        for path in paths:
            r = run_path(args, path, env)
            print(f"{path}: {'ok' if r['returncode'] == 0 else 'FAILED (see ' + str(args.out / (path + '.log')) + ')'}"
                  f" in {r['total_s']:.0f} s, steady {r['steady_s']} s/round", flush=True)
            best = results.get(path)
            if best is None or (r["steady_s"] is not None and (best["steady_s"] is None
                                                              or r["steady_s"] < best["steady_s"])):
                results[path] = {**r, "all_steady_s": (best or {}).get("all_steady_s", [])}
            results[path]["all_steady_s"] = (results[path].get("all_steady_s") or []) + [r["steady_s"]]
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def report(results: dict, args) -> None:
    bare = results.get("bare", {})
    print(f"\n{args.clients} clients, {args.rounds} rounds, preset {args.preset}, "
          f"{' '.join(args.c) or 'no overrides'}; one torch thread per client process\n")
    print("| path | round 1 (s) | steady s/round | overhead vs bare | vs bare2 | max abs diff vs bare "
          "| peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for path, r in results.items():
        def over(ref: str) -> str:
            base = results.get(ref, {}).get("steady_s")
            if base is None or r["steady_s"] is None or path == ref:
                return "-"
            d = r["steady_s"] - base
            return f"{d:+.2f} s ({100 * d / base:+.0f}%)"
        diff = max_abs_diff(bare["final"], r["final"]) if bare.get("final") and r.get("final") else float("nan")
        steady = "failed" if r["steady_s"] is None else f"{r['steady_s']:.2f}"
        first = f"{r['rounds_s'][0]:.2f}" if r["rounds_s"] else "-"
        print(f"| {path} | {first} | {steady} | {over('bare')} | {over('bare2')} | {diff:g} | {r['memory']} |")
    print("\nCPU seconds of the whole child run (data loading, rounds, statistics pass, evaluation), by process:")
    for path, r in results.items():
        print(f"- {path}: {r.get('cpu', '')}")
    for path, r in results.items():
        if r.get("detail"):
            print(f"\n{path}: {r['detail']}")
        if len(r.get("all_steady_s", [])) > 1:
            print(f"{path}: steady s/round of each repeat {r['all_steady_s']}")


if __name__ == "__main__":
    main()
