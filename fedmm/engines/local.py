"""The local engine: build a federation, run the round loop over a transport, evaluate.

:func:`run_simulation` builds a federation from the data config and runs
:func:`fedmm.engines.loop.run_rounds` over the in-process transport (clients one
after another or in worker processes, state on disk, memory flat), the file
exchange or Flower, then evaluates every client's deployed model.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from fedmm.config import RunConfig, to_toml
from fedmm.engines.evaluate import evaluate_federation
from fedmm.engines.files import FilesTransport
from fedmm.engines.loop import NullReporter, ServerContext, run_rounds
from fedmm.engines.prepare import Federation, prepare_federation
from fedmm.engines.report import write_inference_files, write_outputs
from fedmm.engines.tracking import Tracker
from fedmm.engines.transport import FederationInfo, InProcessTransport
from fedmm.engines.workers import WorkerPool, plan_workers, resolve_device
from fedmm.federated.strategies import pools_data
from fedmm.io import read_json, write_json


def new_run_dir(cfg: RunConfig) -> Path:
    """``out/name`` for a new run (``name`` defaults to strategy, seed and time); FileExistsError when it holds one."""
    name = cfg.name or f"{cfg.fed.strategy}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out) / name
    if (run_dir / "checkpoints").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    return run_dir


TRANSPORTS = ("local", "files", "flower")


def resolve_transport(requested: str | None, run_dir: Path, resume: bool, strategy: str) -> str:
    """The transport a run uses: ``requested``, or when resuming the one the run started with
    (``local`` if neither). Raises ValueError for an unknown transport, a resume over a different
    transport than recorded, or the centralized baseline over a non-local transport."""
    marker = run_dir / "transport.json"
    recorded = read_json(marker).get("transport") if resume and marker.exists() else None
    if requested and recorded and requested != recorded:
        raise ValueError(f"{run_dir} ran over the {recorded!r} transport; resume it with that")
    transport = requested or recorded or "local"
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; choose from {', '.join(TRANSPORTS)}")
    if transport != "local" and pools_data(strategy):
        raise ValueError("the centralized baseline pools all data in one place; it runs only with --transport local")
    return transport


def run_simulation(cfg: RunConfig, run_dir: Path, resume: bool = False, reporter=None,
                   transport: str = "local", flower_timeout: float = 3600.0) -> dict:
    """Run (or resume) a simulated federation over ``transport``; returns summary.json's content.

    ``local`` runs the clients in this process; ``files`` exchanges safetensors + JSON
    files through a CLIENT_ROOT in the run directory; ``flower`` starts a SuperLink and
    one SuperNode per client on 127.0.0.1 (TLS) and runs the Flower app
    (``flower_timeout`` bounds the whole Flower run).
    """
    transport = resolve_transport(transport, run_dir, resume, cfg.fed.strategy)
    reporter = Tracker(cfg, run_dir, reporter or NullReporter(), resume)   # TensorBoard files (cfg.tracking)
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    fed: Federation = prepare_federation(cfg)   # data problems surface before the run directory exists
    for issue in fed.issues[:20]:
        reporter.message(f"data issue: {issue}")
    ctx = ServerContext(cfg, FederationInfo.from_federation(fed), run_dir, reporter)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "transport.json", {"transport": transport})
    (run_dir / "config.toml").write_text(to_toml(cfg))
    write_inference_files(run_dir, ctx.info, Path(cfg.data.tokenizer or fed.root / "tokenizer"))
    with WorkerPool(*plan_workers(cfg.workers, cfg.threads, device, len(fed.clients))) as pool:
        state, stores = _run_transport(ctx, fed, transport, resume, device, pool, flower_timeout)
        latest = ctx.ckpt_dir / "latest.json"
        wall = float(read_json(latest).get("wall_s", 0.0)) if latest.exists() else 0.0
        results = evaluate_federation(fed, cfg, ctx.strategy, state, stores, device, pool)
    return reporter.finish(write_outputs(run_dir, cfg, results, wall))


def _run_transport(ctx: ServerContext, fed: Federation, transport: str, resume: bool, device, pool: WorkerPool,
                   flower_timeout: float):
    """Run the rounds over ``transport``; returns the final state and where client states live."""
    if transport == "flower":  # imported here: the launcher needs the deployment extra (cryptography)
        from fedmm.engines.flower.launch import run_flower_simulation

        stores = run_flower_simulation(ctx, fed, resume, flower_timeout)
        return ctx.latest()[0], stores
    if transport == "files":
        tr = FilesTransport.for_simulation(ctx, fed, device)
    else:
        tr = InProcessTransport(fed, ctx.cfg, ctx.strategy, ctx.run_dir, device, ctx.reporter, pool)
    state = run_rounds(ctx, tr, resume)
    tr.finish(state)
    return state, tr.stores
