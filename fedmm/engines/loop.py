"""The round loop every transport shares, and the one step that accepts uploads.

:func:`run_rounds` is the loop: broadcast, ``transport.exchange``, :func:`run_step`
(:func:`accept` the replies, then the server step, metrics rows and checkpoint). It
drives the in-process simulation, the file exchange and the Flower ServerApp;
``fedmm server aggregate`` runs one :func:`run_step` on the uploads it finds on disk.
A transport only moves messages: ``exchange`` returns the
:class:`~fedmm.engines.transport.Reply` objects that came back and one line per
problem it saw on the way (no reply, a client step that failed, a file it could not
read). :func:`accept` is the only place that validates uploads, puts them in
federation order, reports who was left out of the round and enforces
``fed.min_clients``. :class:`ServerContext` is the server side; it needs no patient data.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmm.config import RunConfig
from fedmm.engines.transport import FederationInfo, Reply, RoundFailed
from fedmm.engines.wire import check_upload, load_message, n_requested_logits, order_uploads, save_message, upload_spec
from fedmm.federated.client import build_model, server_init_seed
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
        load_message(ckpt / f"server_round_{rounds:04d}", "broadcast")
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
        model = build_model(self.cfg, self.info.vocab_size, n_classes, server_init_seed(self.cfg))
        self.head = model.head
        self.initial_shared = shared_state(model, self.strategy.spec)
        self.spec = upload_spec(shared_shapes(model, self.strategy.spec), self.head.d, n_classes)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def min_clients(self) -> int:
        """Valid uploads a training round needs (``fed.min_clients``, at least one)."""
        return max(1, int(self.cfg.fed.min_clients))

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
        msg = load_message(self.ckpt_dir / f"server_round_{latest['round']:04d}", "broadcast")
        return ServerState.from_message(msg), float(latest.get("wall_s", 0.0))

    def checkpoint(self, state: ServerState, wall: float, statistics_done: bool = False) -> None:
        """Write the state after ``state.round`` rounds; ``latest.json`` (written last) points to it."""
        save_message(state.broadcast(), self.ckpt_dir / f"server_round_{state.round:04d}")
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
        """Server step on one round's accepted uploads (:func:`accept`), metrics rows and checkpoint."""
        r = state.round
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


def _valid(replies: list[Reply], spec: dict[str, tuple], round_idx: int, clients: list[str],
           n_logits: int | None) -> tuple[list[Reply], list[str]]:
    """The replies that pass :func:`~fedmm.engines.wire.check_upload` and claim the client they
    came from (when the transport knows it), in the order they came; one line per other reply."""
    valid, problems = [], []
    for reply in replies:
        try:
            name = check_upload(reply.message, spec, round_idx, clients, n_logits)
            if reply.client is not None and name != reply.client:
                raise MessageError(f"the upload of {reply.client} claims to come from {name!r}")
        except MessageError as exc:
            problems.append(f"{reply.source}: upload rejected: {exc}")
            continue
        valid.append(reply)
    return valid, problems


def screen(replies: list[Reply], spec: dict[str, tuple], round_idx: int, clients: list[str],
           n_logits: int | None) -> tuple[list[Message], list[str]]:
    """The valid uploads among ``replies``, in federation order, and one line per reply left out:
    rejected by :func:`~fedmm.engines.wire.check_upload`, claiming another client than the
    one it came from, or a second upload of a client (the first one counts)."""
    valid, problems = _valid(replies, spec, round_idx, clients, n_logits)
    uploads, dropped = order_uploads([reply.message for reply in valid], clients)
    return uploads, problems + dropped


def accept(ctx: ServerContext, replies: list[Reply], problems: list[str], broadcast: Message,
           round_idx: int) -> list[Message]:
    """The uploads the server step of ``round_idx`` uses: the valid ones (as :func:`screen`), then
    every client left out reported (the transport's ``problems`` first), then the size check.

    Raises :class:`RoundFailed` (nothing written) with fewer than ``fed.min_clients`` valid
    uploads in a training round, or none in the statistics pass (``broadcast`` carries its task;
    its uploads hold no public logits). Replies marked ``announce`` are passed to
    ``reporter.client_done`` once valid, in the order they came.
    """
    statistics = broadcast.meta.get("task") == bn_stats.TASK
    n_logits = None if statistics else n_requested_logits(broadcast)
    valid, rejected = _valid(replies, ctx.spec, round_idx, ctx.info.clients, n_logits)
    for reply in valid:
        if reply.announce:
            ctx.reporter.client_done(reply.message.meta["client"], reply.message.meta)
    uploads, dropped = order_uploads([reply.message for reply in valid], ctx.info.clients)
    where = "the statistics pass" if statistics else f"round {round_idx + 1}"
    for line in [*problems, *rejected, *dropped]:
        ctx.reporter.message(f"left out of {where}: {line}")
    if statistics and not uploads:
        raise RoundFailed("statistics pass: no valid upload yet (each client runs 'fedmm client train' once "
                          "more after the last round)")
    if not statistics and len(uploads) < ctx.min_clients:
        raise RoundFailed(f"round {round_idx + 1}: only {len(uploads)} of {len(ctx.info.clients)} clients sent a "
                          f"valid upload, fewer than min_clients = {ctx.min_clients}; the global state stays at "
                          f"round {round_idx}")
    return uploads


def run_step(ctx: ServerContext, state: ServerState, broadcast: Message, replies: list[Reply],
             problems: list[str], wall: float) -> tuple[ServerState, dict]:
    """One pass of the loop once the replies to ``broadcast`` are in: :func:`accept`, then the server
    step (:meth:`ServerContext.finish_round`) or, for the statistics task, the pooled BatchNorm
    statistics (:meth:`ServerContext.finish_statistics`). Returns the new state and the round info."""
    uploads = accept(ctx, replies, problems, broadcast, state.round)
    if broadcast.meta.get("task") == bn_stats.TASK:
        return ctx.finish_statistics(state, uploads, wall), {"n_uploads": len(uploads), "statistics": True}
    return ctx.finish_round(state, uploads, wall)


def run_rounds(ctx: ServerContext, transport, resume: bool = False) -> ServerState:
    """The one round loop: broadcast, exchange over ``transport``, :func:`run_step`; after the last
    round the statistics pass when it is due (``fed.bn = recompute``)."""
    state, wall_before = ctx.start(resume)
    t0 = time.time()

    def one_pass(state: ServerState) -> ServerState:
        broadcast = ctx.next_broadcast(state)
        replies, problems = transport.exchange(broadcast, state.round)
        return run_step(ctx, state, broadcast, replies, problems, wall_before + time.time() - t0)[0]

    for r in range(state.round, ctx.cfg.fed.rounds):
        ctx.reporter.start_round(r, ctx.cfg.fed.rounds, len(ctx.info.clients))
        state = one_pass(state)
    if ctx.needs_statistics(state):
        state = one_pass(state)
    return state


def _truncate_metrics(path: Path, rounds_done: int) -> None:
    """Drop metric rows of rounds that were not checkpointed (a run killed mid-round)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["round"] < rounds_done]
    path.write_text("".join(line + "\n" for line in keep))
