"""The file exchange (for air-gapped sites): the brief's three scripts over CLIENT_ROOT.

::

    CLIENT_ROOT/
      client_<k>/                 one hospital (see fedmm.engines.clientside)
      server/                     the server's own: config.toml, federation.json,
                                  checkpoints/, metrics.jsonl
      server/global_vectors/      published by the server, read by every client:
                                  federation.json, config.toml, public/, tokenizer/,
                                  global_round_XXXX.{safetensors,json}, latest.json
      server/uploads/round_XXXX/  <client>.{safetensors,json}, written by the clients

``fedmm server init`` publishes round 0; then, per round, every client runs
``fedmm client train`` (``train_client``), the server ``fedmm server aggregate``
(:func:`aggregate`) and every client ``fedmm client update`` (``update_client``).
Files are safetensors + JSON, written to a temporary name and renamed; the
server reads what is there (:func:`read_uploads`) and takes it through the round
loop's :func:`~fedmm.engines.loop.accept`, which leaves a client out of the round
(with the reason) when its upload is missing or bad.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from fedmm.config import RunConfig, to_toml
from fedmm.data.encode import encode_split, hide_modality
from fedmm.data.manifest import load_manifest
from fedmm.data.tokenizer import load_tokenizer, train_wordpiece
from fedmm.engines.clientside import read_federation, train_step, update_step
from fedmm.engines.loop import NullReporter, ServerContext, run_step
from fedmm.engines.store import ClientStateStore
from fedmm.engines.transport import FederationInfo, Reply, RoundFailed
from fedmm.engines.wire import load_message, publish_state, read_published, save_message
from fedmm.federated.messages import Message, MessageError
from fedmm.federated.strategies import pools_data
from fedmm.io import read_json, write_json


def shared_dir(root: Path) -> Path:
    return Path(root) / "server" / "global_vectors"


def uploads_dir(root: Path, round_idx: int) -> Path:
    return Path(root) / "server" / "uploads" / f"round_{round_idx:04d}"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish_static(shared: Path, cfg: RunConfig, info: FederationInfo, public_src: Path, tokenizer_src: Path) -> None:
    """What every client needs once: federation facts, config, public set, tokenizer."""
    shared.mkdir(parents=True, exist_ok=True)
    for name, src in (("public", public_src), ("tokenizer", tokenizer_src)):
        shutil.rmtree(shared / name, ignore_errors=True)
        shutil.copytree(src, shared / name, copy_function=_link_or_copy)
    info.save(shared / "federation.json")
    (shared / "config.toml").write_text(to_toml(cfg))


def _client_paths(client_dir: Path, shared: Path | None) -> tuple[Path, Path]:
    client_dir = Path(os.path.abspath(client_dir))
    if not (client_dir / "train").is_dir():
        raise FileNotFoundError(f"{client_dir}: no train/ folder (expected a client folder of CLIENT_ROOT)")
    return client_dir, Path(shared) if shared else client_dir.parent / "server" / "global_vectors"


def train_client(client_dir: Path, shared: Path | None = None, upload_root: Path | None = None,
                 device: str | None = None, threads: int | None = None) -> Path:
    """``fedmm client train``: train on the published state; write the upload; return its path stem."""
    client_dir, shared = _client_paths(client_dir, shared)
    cfg, info = read_federation(shared)
    up = train_step(client_dir, shared, read_published(shared), cfg, info, device, threads)
    r = int(up.meta["round"])
    root = Path(upload_root) if upload_root else client_dir.parent / "server" / "uploads"
    stem = root / f"round_{r:04d}" / up.meta["client"]
    stem.with_suffix(".json").unlink(missing_ok=True)  # the index is written last and marks a complete upload
    save_message(up, stem)
    return stem


def update_client(client_dir: Path, shared: Path | None = None, device: str | None = None,
                  threads: int | None = None) -> dict:
    """``fedmm client update``: own encoders + the published global part -> best_model.safetensors."""
    client_dir, shared = _client_paths(client_dir, shared)
    cfg, info = read_federation(shared)
    return update_step(client_dir, shared, read_published(shared), cfg, info, device, threads)


def federation_from_root(root: Path, cfg: RunConfig) -> tuple[FederationInfo, Path]:
    """Federation facts from CLIENT_ROOT (partition.json, public/, tokenizer), building the tokenizer if absent."""
    root = Path(root)
    try:
        part = read_json(root / "partition.json")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{root}: no partition.json (build the layout with 'fedmm data partition')") from exc
    tok_dir = Path(cfg.data.tokenizer) if cfg.data.tokenizer else root / "tokenizer"
    public = load_manifest(root / "public", require_labels=False)
    if not tok_dir.exists():
        train_wordpiece([r.text for r in public.records if r.text], tok_dir, cfg.data.vocab_size)
    tok = load_tokenizer(tok_dir)
    n_public = len(hide_modality(encode_split(public, tok, cfg.data.image_size, cfg.data.max_len), cfg.data.modalities))
    info = FederationInfo(list(part["classes"]), bool(part.get("multilabel", False)), len(tok), n_public,
                          [c["name"] for c in part["clients"]])
    return info, tok_dir


def init_server(root: Path, cfg: RunConfig, overwrite: bool = False, reporter=None) -> ServerContext:
    """``fedmm server init``: the server's files, the static files clients need, global state of round 0."""
    if pools_data(cfg.fed.strategy):
        raise ValueError("the centralized baseline pools all data; it cannot run over the file exchange")
    root, server = Path(root), Path(root) / "server"
    if (server / "checkpoints" / "latest.json").exists() and not overwrite:
        raise FileExistsError(f"{server} already holds a federation; use overwrite to start again")
    if overwrite:
        for p in (server / "checkpoints", server / "uploads", server / "metrics.jsonl"):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    info, tok_dir = federation_from_root(root, cfg)
    ctx = ServerContext(cfg, info, server, reporter or NullReporter())
    server.mkdir(parents=True, exist_ok=True)
    (server / "config.toml").write_text(to_toml(cfg))
    info.save(server / "federation.json")
    publish_static(shared_dir(root), cfg, info, root / "public", tok_dir)
    state, _ = ctx.start(resume=False)
    ctx.checkpoint(state, 0.0)
    publish_state(shared_dir(root), state.broadcast({"strategy": ctx.strategy.name}))
    return ctx


def server_context(root: Path, reporter=None, min_clients: int | None = None) -> ServerContext:
    """The server of CLIENT_ROOT as ``fedmm server init`` left it (``min_clients`` overrides the config)."""
    server = Path(root) / "server"
    cfg, info = read_federation(server)
    if min_clients is not None:
        cfg.fed.min_clients = int(min_clients)
    return ServerContext(cfg, info, server, reporter or NullReporter())


def read_uploads(folder: Path, clients: list[str], round_idx: int) -> tuple[list[Reply], list[str]]:
    """The uploads of ``round_idx`` found in ``folder`` (one per client, in federation order, not yet
    validated) and one line per client whose upload is missing or cannot be read. Their federated
    tensors stay in the files until the server aggregates them (read in slices then)."""
    replies, problems = [], []
    for name in clients:
        stem = Path(folder) / name
        if not stem.with_suffix(".json").exists():
            problems.append(f"{name}: no upload for round {round_idx + 1} ({stem}.json missing)")
            continue
        try:
            replies.append(Reply(name, load_message(stem, "upload", lazy="shared/"), client=name))
        except MessageError as exc:
            problems.append(f"{name}: upload rejected: {exc}")
    return replies, problems


def aggregate(root: Path, reporter=None, min_clients: int | None = None) -> tuple:
    """``fedmm server aggregate``: one step of the round loop (:func:`fedmm.engines.loop.run_step`) on
    the uploads in this round's folder; publish the new global state. Returns (state, round info).

    Raises :class:`RoundFailed` (global state untouched) when fewer than ``min_clients`` valid
    uploads arrived (none in the statistics pass) or when every round is done.
    """
    ctx = server_context(root, reporter, min_clients)
    if not (ctx.ckpt_dir / "latest.json").exists():
        raise FileNotFoundError(f"{ctx.run_dir}: no global state (run 'fedmm server init' first)")
    t0 = time.time()
    state, wall = ctx.start(resume=True, announce=False)   # also drops metric rows of an unfinished aggregation
    shared = shared_dir(root)
    if not (shared / "latest.json").exists() or read_json(shared / "latest.json").get("round") != state.round:
        publish_state(shared, ctx.next_broadcast(state))   # an earlier run stopped in between
        ctx.reporter.message(f"published the global state after round {state.round} again")
    if state.round >= ctx.cfg.fed.rounds and not ctx.needs_statistics(state):
        raise RoundFailed(f"all {ctx.cfg.fed.rounds} rounds are done (raise fed.rounds in {ctx.run_dir}/config.toml "
                          "to continue)")
    broadcast = ctx.next_broadcast(state)   # after the last round: the statistics pass, when it is due
    replies, problems = read_uploads(uploads_dir(root, state.round), ctx.info.clients, state.round)
    state, info = run_step(ctx, state, broadcast, replies, problems, wall + time.time() - t0)
    publish_state(shared, ctx.next_broadcast(state))
    return state, info


def link_simulation_root(fed, cfg: RunConfig, root: Path) -> Path:
    """A CLIENT_ROOT for one simulated run: links to the prepared data, state files of its own."""
    root.mkdir(parents=True, exist_ok=True)

    def link(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_symlink():
            dst.symlink_to(Path(src).resolve(), target_is_directory=Path(src).is_dir())

    link(fed.root / "partition.json", root / "partition.json")
    link(fed.root / "public", root / "public")
    link(Path(cfg.data.tokenizer) if cfg.data.tokenizer else fed.root / "tokenizer", root / "tokenizer")
    for c in fed.clients:
        for split in ("train", "val"):
            link(fed.root / c.name / split, root / c.name / split)
    return root


class FilesTransport:
    """Round exchange through files: publish, run each client's file step, read back the uploads."""

    def __init__(self, root: Path, ctx: ServerContext, device: str | None = None) -> None:
        self.root, self.ctx, self.device = Path(root), ctx, device
        self.stores = {name: ClientStateStore(self.root / name / "state") for name in ctx.info.clients}

    @classmethod
    def for_simulation(cls, ctx: ServerContext, fed, device) -> "FilesTransport":
        root = link_simulation_root(fed, ctx.cfg, ctx.run_dir / "client_root")
        tok_dir = Path(ctx.cfg.data.tokenizer) if ctx.cfg.data.tokenizer else root / "tokenizer"
        publish_static(shared_dir(root), ctx.cfg, ctx.info, root / "public", tok_dir)
        return cls(root, ctx, str(device))

    def exchange(self, broadcast: Message, round_idx: int) -> tuple[list[Reply], list[str]]:
        publish_state(shared_dir(self.root), broadcast)
        # 'client update' between rounds only rewrites best_model.safetensors: finish() does it once
        for name in self.ctx.info.clients:
            try:
                stem = train_client(self.root / name, device=self.device)
                self.ctx.reporter.client_done(name, read_json(stem.with_suffix(".json"))["meta"])
            except (MessageError, FileNotFoundError, ValueError, RuntimeError) as exc:
                self.ctx.reporter.message(f"{name}: client step failed: {exc}")
        return read_uploads(uploads_dir(self.root, round_idx), self.ctx.info.clients, round_idx)

    def finish(self, state) -> None:
        """Publish the final global state and let every client take it in (best_model.safetensors)."""
        publish_state(shared_dir(self.root), state.broadcast({"strategy": self.ctx.strategy.name}))
        for name in self.ctx.info.clients:
            update_client(self.root / name, device=self.device)
