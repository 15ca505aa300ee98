"""A trained client's deployed model, loaded for use on new cases (``fedmm predict``).

Two places hold one:

* a run directory (``fedmm run``) + a client name: ``config.toml``, ``federation.json``
  (classes, vocabulary size, client names), ``tokenizer/``, the final global state
  ``checkpoints/server_round_XXXX`` and the client's own state (``clients/<name>/``
  for the in-process transport, ``client_root/<name>/state/`` for files / Flower).
  The model is assembled exactly as the final evaluation assembles it
  (:func:`fedmm.engines.evaluate.deployed_model`, global vectors of the final state);
* a client folder of a deployment (``CLIENT_ROOT/client_k``, see
  :mod:`fedmm.engines.clientside`): ``best_model.safetensors`` (written by the update
  step) and the distributed ``server/global_vectors/`` (config, federation facts,
  tokenizer, latest published global state).

Either way the preprocessing (image size, text length, hidden modalities) comes from
the run's config and the tokenizer is the one the run encoded its reports with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fedmm.config import RunConfig, read_config
from fedmm.data.manifest import load_manifest
from fedmm.data.tokenizer import load_tokenizer
from fedmm.engines.clientside import client_identity, read_federation
from fedmm.engines.evaluate import deployed_model
from fedmm.engines.loop import check_checkpoint
from fedmm.engines.store import ClientStateStore, ClientStore
from fedmm.engines.transport import FederationInfo
from fedmm.engines.wire import load_message, read_published
from fedmm.engines.workers import resolve_device
from fedmm.federated.client import assemble_model
from fedmm.federated.server import ServerState
from fedmm.federated.strategies import strategy_from_config
from fedmm.federated.train import own_view
from fedmm.io import load_arrays, read_json
from fedmm.models.model import FedMMModel
from fedmm.models.surrogate import GlobalVectors

SHARED_IN_RUN = Path("client_root") / "server" / "global_vectors"   # files / Flower transports


@dataclass
class Predictor:
    """A client's deployed model with everything needed to preprocess new cases the way the run did."""

    cfg: RunConfig
    classes: list[str]
    multilabel: bool
    tokenizer: object                 # the run's tokenizer (transformers fast tokenizer)
    model: FedMMModel
    gv: GlobalVectors | None          # global vectors of the final state (surrogates), None if not used
    view: str                         # full | image_only | text_only: what the client's model reads
    client: str
    source: str                       # where the model came from (for messages and the JSON output)
    device: torch.device


def _device(name: str | None, cfg: RunConfig) -> torch.device:
    try:
        return resolve_device(name or cfg.device)
    except RuntimeError as exc:   # no CUDA device: a usage problem, not a bug
        raise ValueError(f"--device: {exc}") from exc


def _check_vocab(tok, info: FederationInfo, where: Path) -> None:
    if len(tok) != info.vocab_size:
        raise ValueError(f"{where}: tokenizer has {len(tok)} tokens, the federation was trained with "
                         f"{info.vocab_size}; it is not the run's tokenizer")


def _saved(run_dir: Path, name: str) -> Path:
    """``run_dir/name``, or the copy the files / Flower transports published."""
    for path in (run_dir / name, run_dir / SHARED_IN_RUN / name):
        if path.exists():
            return path
    raise FileNotFoundError(f"{run_dir}: no {name} (runs made before 'fedmm predict' existed did not save it); "
                            f"write it with 'fedmm run --resume {run_dir}' (the finished run is only re-evaluated)")


def _client_modality(run_dir: Path, client: str) -> str:
    """The client type the final evaluation recorded (results_per_client.json, else metrics.jsonl)."""
    per_client = run_dir / "results_per_client.json"
    if per_client.is_file():
        got = read_json(per_client).get(client, {}).get("modality")
        if got:
            return got
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("client") == client and row.get("modality"):
                return row["modality"]
    raise FileNotFoundError(f"{run_dir}: neither results_per_client.json nor metrics.jsonl says which modalities "
                            f"{client} has; finish the run with 'fedmm run --resume {run_dir}'")


def _client_store(run_dir: Path, client: str, rounds: int) -> ClientStore:
    """Where the run kept the client's own model state (by the transport it ran over)."""
    marker = run_dir / "transport.json"
    transport = read_json(marker).get("transport", "local") if marker.is_file() else "local"
    if transport in ("files", "flower"):
        return ClientStateStore(run_dir / "client_root" / client / "state")
    store = ClientStore(run_dir / "clients" / client)
    if not store.path(rounds - 1).is_file():
        raise FileNotFoundError(f"{store.path(rounds - 1)}: missing; the run's final state of {client} is gone "
                                "(was the run directory copied only in part?)")
    return store


def load_run_predictor(run_dir: str | Path, client: str | None, device: str | None = None) -> Predictor:
    """The deployed model of ``client`` in a finished run directory (final round of ``fedmm run``)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir / "config.toml")
    rounds = check_checkpoint(run_dir)
    if rounds < int(cfg.fed.rounds):
        raise ValueError(f"{run_dir}: the run stopped after {rounds} of {cfg.fed.rounds} rounds; "
                         f"finish it with 'fedmm run --resume {run_dir}' before predicting")
    info = FederationInfo.load(_saved(run_dir, "federation.json"))
    if client is None or client not in info.clients:
        known = ", ".join(info.clients[:10]) + (" ..." if len(info.clients) > 10 else "")
        what = "name a client with --client" if client is None else f"client {client!r} is not part of this run"
        raise ValueError(f"{run_dir}: {what} (clients: {known})")
    tok_dir = _saved(run_dir, "tokenizer")
    tok = load_tokenizer(tok_dir)
    _check_vocab(tok, info, tok_dir)
    strategy = strategy_from_config(cfg)
    state = ServerState.from_message(load_message(run_dir / "checkpoints" / f"server_round_{rounds:04d}", "broadcast"))
    dev = _device(device, cfg)
    store = _client_store(run_dir, client, rounds)
    model = deployed_model(cfg, info.vocab_size, len(info.classes), info.clients.index(client), store,
                           state.shared if strategy.share else None, dev)
    view = "full" if strategy.pools_data else own_view(_client_modality(run_dir, client))
    return Predictor(cfg, list(info.classes), info.multilabel, tok, model, state.gv if strategy.prototypes else None,
                     view, client, f"{run_dir} ({client}, round {rounds})", dev)


def _train_modality(train_dir: Path, modalities: str) -> str:
    """Client type from its training manifest, as :attr:`fedmm.federated.client.ClientData.modality`."""
    data = load_manifest(train_dir, require_labels=False)
    img = [r.image is not None and modalities != "text" for r in data.records]
    txt = [r.text is not None and modalities != "image" for r in data.records]
    rows = [(i, t) for i, t in zip(img, txt) if i or t]
    if not rows:
        raise ValueError(f"{train_dir}: no usable training rows; cannot tell which modalities the client has")
    any_img, any_txt = any(i for i, _ in rows), any(t for _, t in rows)
    if all(i and t for i, t in rows):
        return "multimodal"
    return "image_only" if not any_txt else "text_only" if not any_img else "mixed"


def load_client_predictor(client_dir: str | Path, shared: str | Path | None = None,
                          device: str | None = None) -> Predictor:
    """The deployed model of a deployment's client folder (``best_model.safetensors`` + published state)."""
    client_dir = Path(os.path.abspath(client_dir))
    shared = Path(shared) if shared else client_dir.parent / "server" / "global_vectors"
    best = client_dir / "best_model.safetensors"
    if not best.is_file():
        raise FileNotFoundError(f"{best}: missing; the client takes in the final global state with "
                                f"'fedmm client update --client-dir {client_dir}'")
    cfg, info = read_federation(shared)
    name, index = client_identity(client_dir, info)
    tok = load_tokenizer(shared / "tokenizer")
    _check_vocab(tok, info, shared / "tokenizer")
    dev = _device(device, cfg)
    # the update step's assembly (own state + global shared part), as it wrote it
    model = assemble_model(cfg, info.vocab_size, len(info.classes), index, dev, state=load_arrays(best))
    gv, rnd = None, read_json(best.with_suffix(".json")).get("global_round")
    if strategy_from_config(cfg).prototypes:
        broadcast = read_published(shared)
        if broadcast.meta.get("round") != rnd:
            raise ValueError(f"{best} holds the state after round {rnd}, {shared} publishes round "
                             f"{broadcast.meta.get('round')}; run 'fedmm client update --client-dir {client_dir}'")
        gv = GlobalVectors.from_arrays(broadcast.arrays)
    view = own_view(_train_modality(client_dir / "train", cfg.data.modalities))
    return Predictor(cfg, list(info.classes), info.multilabel, tok, model, gv, view, name,
                     f"{client_dir} (round {rnd})", dev)


def load_predictor(path: str | Path, client: str | None = None, shared: str | Path | None = None,
                   device: str | None = None) -> Predictor:
    """A run directory + ``client``, a CLIENT_ROOT + ``client``, or a client folder -> its deployed model."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; give a run directory (made by 'fedmm run') with "
                                "--client, or a client folder of a deployment (CLIENT_ROOT/client_k)")
    if (path / "config.toml").is_file() and (path / "checkpoints").is_dir():
        return load_run_predictor(path, client, device)
    if client and (path / "server" / "global_vectors").is_dir():   # CLIENT_ROOT of the file exchange
        path = path / client
    elif client and client != Path(os.path.abspath(path)).name and (path / "best_model.safetensors").exists():
        raise ValueError(f"{path} is the folder of client {Path(os.path.abspath(path)).name!r}, not {client!r}")
    if (path / "best_model.safetensors").exists() or (path / "train").is_dir():
        return load_client_predictor(path, shared, device)
    raise FileNotFoundError(f"{path}: neither a run directory (config.toml + checkpoints/) nor a client folder "
                            "(best_model.safetensors); give the folder 'fedmm run' printed, with --client")
