"""The round loop and the local engine.

:func:`run_rounds` is the one round loop every transport shares (broadcast,
exchange, server step, metrics, checkpoint); :class:`ServerContext` is its
server side. :func:`run_simulation` builds a federation and runs it over the
in-process transport (clients one after another, state on disk, memory flat),
the file exchange or Flower, then evaluates.
"""
from __future__ import annotations

import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedmm.config import RunConfig, from_dict, to_toml
from fedmm.engines.evaluate import evaluate_federation
from fedmm.engines.prepare import Federation, prepare_federation
from fedmm.engines.report import write_inference_files, write_outputs
from fedmm.engines.tracking import Tracker
from fedmm.engines.transport import FederationInfo, InProcessTransport, RoundFailed, upload_spec
from fedmm.engines.workers import WorkerPool, plan_workers
from fedmm.federated.client import build_model, stable_seed
from fedmm.federated.mechanisms import bn_stats
from fedmm.federated.messages import Message, MessageError
from fedmm.federated.params import shared_shapes, shared_state
from fedmm.federated.server import ServerState, server_round
from fedmm.federated.strategies import strategy_from_config
from fedmm.io import append_jsonl, read_json, write_json


class NullReporter:
    """Progress hooks; the CLI passes a rich implementation."""

    def start_round(self, r: int, total_rounds: int, n_clients: int) -> None: ...
    def client_done(self, name: str, meta: dict) -> None: ...
    def end_round(self, r: int, info: dict) -> None: ...
    def message(self, text: str) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def new_run_dir(cfg: RunConfig) -> Path:
    name = cfg.name or f"{cfg.fed.strategy}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out) / name
    if (run_dir / "checkpoints").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    return run_dir


def load_run_config(run_dir: Path) -> RunConfig:
    """The config ``run_dir`` was started with. Raises FileNotFoundError when it holds no config.toml
    (not a run directory) and ValueError naming the file when that file is damaged."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.toml)")
    try:
        with open(path, "rb") as fh:
            return from_dict(tomllib.load(fh))
    except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"{path}: damaged run config ({why}); restore it or start a new run") from exc


def check_checkpoint(run_dir: Path) -> int:
    """Rounds held by the latest checkpoint of ``run_dir`` (0 without one), after checking that
    ``checkpoints/latest.json`` and the server state it points to can be read; raises ValueError
    naming the damaged file otherwise."""
    ckpt = Path(run_dir) / "checkpoints"
    latest = ckpt / "latest.json"
    if not latest.exists():
        return 0
    hint = "the run cannot be resumed from it; start a new run (another --name)"
    try:
        rounds = int(read_json(latest)["round"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{latest}: damaged checkpoint ({type(exc).__name__}: {exc}); {hint}") from exc
    try:
        Message.load(ckpt / f"server_round_{rounds:04d}", "broadcast")
    except MessageError as exc:
        raise ValueError(f"damaged checkpoint: {exc}; {hint}") from exc
    return rounds


@dataclass
class ServerContext:
    """The server side of the round loop: config, federation facts, head, run directory.

    Needs no patient data, so the same object drives the in-process simulation,
    ``fedmm server aggregate`` (file exchange) and the Flower ServerApp.
    """

    cfg: RunConfig
    info: FederationInfo
    run_dir: Path
    reporter: object = field(default_factory=NullReporter)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.strategy = strategy_from_config(self.cfg)
        n_classes = len(self.info.classes)
        model = build_model(self.cfg, self.info.vocab_size, n_classes, stable_seed(int(self.cfg.seed), 0xC0FFEE))
        self.head = model.head
        self.initial_shared = shared_state(model, self.strategy.spec)
        self.spec = upload_spec(shared_shapes(model, self.strategy.spec), self.head.d, n_classes)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def start(self, resume: bool, announce: bool = True) -> tuple[ServerState, float]:
        """The state to continue from (latest checkpoint when resuming) and the wall time already spent."""
        seed, metrics_path = int(self.cfg.seed), self.run_dir / "metrics.jsonl"
        if resume and (self.ckpt_dir / "latest.json").exists():
            state, wall = self.latest()
            _truncate_metrics(metrics_path, state.round)
            if announce:
                self.reporter.message(f"resuming after round {state.round}")
            return state, wall
        metrics_path.unlink(missing_ok=True)
        state = ServerState(0, dict(self.initial_shared))
        if self.strategy.kd or self.strategy.rep_kd:
            rng = np.random.default_rng(seed * 1_000_003)
            m = min(self.cfg.train.kd_public_per_round, self.info.n_public)
            state.public_index = np.sort(rng.choice(self.info.n_public, m, replace=False)).astype(np.int64)
        return state, 0.0

    def latest(self) -> tuple[ServerState, float]:
        """The last checkpointed state and the wall time it records."""
        latest = read_json(self.ckpt_dir / "latest.json")
        msg = Message.load(self.ckpt_dir / f"server_round_{latest['round']:04d}", "broadcast")
        return ServerState.from_message(msg), float(latest.get("wall_s", 0.0))

    def checkpoint(self, state: ServerState, wall: float, statistics_done: bool = False) -> None:
        """Write the state after ``state.round`` rounds; ``latest.json`` (written last) points to it."""
        state.broadcast().save(self.ckpt_dir / f"server_round_{state.round:04d}")
        write_json(self.ckpt_dir / "latest.json", {"round": state.round, "wall_s": wall,
                                                   **({"bn_stats": True} if statistics_done else {})})

    def needs_statistics(self, state: ServerState) -> bool:
        """After the last round with ``fed.bn = recompute``: the statistics pass has not run yet."""
        s = self.strategy
        if not (s.share and s.spec.encoders == "shared" and s.spec.bn == "recompute"):
            return False
        latest = self.ckpt_dir / "latest.json"
        return state.round >= self.cfg.fed.rounds and not (latest.exists() and read_json(latest).get("bn_stats"))

    def next_broadcast(self, state: ServerState) -> Message:
        """What the clients get next: the global state, with the statistics task once it is due."""
        meta = {"strategy": self.strategy.name}
        if self.needs_statistics(state):
            meta["task"] = bn_stats.TASK
        return state.broadcast(meta)

    def finish_statistics(self, state: ServerState, uploads: list[Message], wall: float) -> ServerState:
        """Pool the clients' BatchNorm statistics into the global state (same round) and checkpoint it."""
        pooled = {k: v for k, v in bn_stats.pooled_statistics(uploads).items() if k in state.shared}
        state.shared.update(pooled)
        self.checkpoint(state, wall, statistics_done=True)
        self.reporter.message(f"BatchNorm statistics of {len(pooled) // 2} layers recomputed on "
                              f"{len(uploads)} clients' images")
        return state

    def finish_round(self, state: ServerState, uploads: list[Message], wall: float) -> tuple[ServerState, dict]:
        """Server step on one round's uploads, metrics rows and checkpoint.

        Raises :class:`RoundFailed` (and writes nothing) with fewer than
        ``fed.min_clients`` uploads, so the last good global state stays in place.
        """
        r, need = state.round, max(1, int(self.cfg.fed.min_clients))
        if len(uploads) < need:
            raise RoundFailed(f"round {r + 1}: only {len(uploads)} of {len(self.info.clients)} clients sent a valid "
                              f"upload, fewer than min_clients = {need}; the global state stays at round {r}")
        state, info = server_round(state, uploads, self.strategy, self.cfg, self.head, self.info.n_public,
                                   self.info.multilabel)
        clipped = {c["client"]: c["norm"] for c in info.get("clipped", [])}
        rows = [{"round": r, "client": u.meta["client"], "modality": u.meta["modality"],
                 "val_macro_f1": u.meta["val_score"], "train_loss": u.meta["train_loss"],
                 "n_train": u.meta["n_train"], "upload_bytes": int(sum(a.nbytes for a in u.arrays.values())),
                 "weight": info.get("weights", {}).get(u.meta["client"]),
                 "role": "student" if u.meta["client"] in info.get("students", [])
                 else "teacher" if u.meta["client"] in info.get("teachers", []) else "",
                 **({"clipped_norm": clipped[u.meta["client"]]} if u.meta["client"] in clipped else {}),
                 **({"attacker": True} if u.meta.get("attacker") else {})} for u in uploads]  # simulation label only
        scores = [u.meta["val_score"] for u in uploads]
        answered = {u.meta["client"] for u in uploads}
        missing = [c for c in self.info.clients if c not in answered]
        rows.append({"round": r, "client": "global", "val_macro_f1_mean": float(np.mean(scores)),
                     "n_uploads": len(uploads), "effective_clients": info.get("effective_clients"),
                     "upload_bytes_mean": float(np.mean([sum(a.nbytes for a in u.arrays.values()) for u in uploads])),
                     "n_prototypes": 0 if state.gv is None else len(state.gv.pair_img),
                     "wall_s": wall, **({"missing": missing} if missing else {}),
                     **({"clip_bound": info["clip_bound"]} if "clip_bound" in info else {}),
                     **({"teachers": info["teachers"]} if "teachers" in info else {}),
                     "robust": info.get("robust", [])})   # claims bounds that bit (mechanisms/claims.py)
        append_jsonl(self.run_dir / "metrics.jsonl", rows)
        self.checkpoint(state, wall)
        info.pop("weights", None)
        self.reporter.end_round(r, {**info, "val_macro_f1_mean": float(np.mean(scores)), "wall_s": wall})
        return state, info


def run_rounds(ctx: ServerContext, transport, resume: bool = False) -> ServerState:
    """The one round loop: broadcast, exchange over ``transport``, server step, checkpoint."""
    state, wall_before = ctx.start(resume)
    t0 = time.time()
    for r in range(state.round, ctx.cfg.fed.rounds):
        ctx.reporter.start_round(r, ctx.cfg.fed.rounds, len(ctx.info.clients))
        uploads = transport.exchange(ctx.next_broadcast(state), r)
        state, _ = ctx.finish_round(state, uploads, wall_before + time.time() - t0)
    if ctx.needs_statistics(state):
        uploads = transport.exchange(ctx.next_broadcast(state), state.round)
        state = ctx.finish_statistics(state, uploads, wall_before + time.time() - t0)
    return state


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
    if transport != "local" and strategy == "centralized":
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
    if transport == "flower":  # imported here: the Flower package builds on this module
        from fedmm.engines.flower.launch import run_flower_simulation

        stores = run_flower_simulation(ctx, fed, resume, flower_timeout)
        return ctx.latest()[0], stores
    if transport == "files":  # imported here: the file exchange builds on this module
        from fedmm.engines.files import FilesTransport

        tr = FilesTransport.for_simulation(ctx, fed, device)
    else:
        tr = InProcessTransport(fed, ctx.cfg, ctx.strategy, ctx.spec, ctx.run_dir, device, ctx.reporter, pool)
    state = run_rounds(ctx, tr, resume)
    tr.finish(state)
    return state, tr.stores


def _truncate_metrics(path: Path, rounds_done: int) -> None:
    """Drop metric rows of rounds that were not checkpointed (a run killed mid-round)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["round"] < rounds_done]
    path.write_text("".join(line + "\n" for line in keep))
