"""A client's side of a deployment (file exchange and Flower): its folder, data, state and steps.

``CLIENT_DIR`` (one hospital, e.g. ``CLIENT_ROOT/client_3``) holds ``train/`` and
``val/`` (dataset folders), ``state/round_XXXX.safetensors`` (its own model after each
round it trained, including what it does not federate) and ``best_model.safetensors``
+ ``.json`` (the deployed model: its own model with every federated tensor replaced by
the latest global one, written by the update step). ``SHARED_DIR`` (``CLIENT_ROOT/server/global_vectors/``, distributed by
the coordinator) holds ``federation.json``, ``config.toml``, the public set
(``public/``), the tokenizer (``tokenizer/``) and, for the file exchange, the
published global state. The steps read nothing else.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from fedmm.config import RunConfig, read_config, to_toml
from fedmm.data.encode import EncodedSplit, encode_split, hide_modality
from fedmm.data.manifest import load_manifest
from fedmm.data.tokenizer import load_tokenizer
from fedmm.engines.store import ClientStateStore
from fedmm.engines.transport import FederationInfo
from fedmm.engines.wire import broadcast_spec, check_broadcast
from fedmm.engines.workers import resolve_device
from fedmm.federated.client import ClientData, assemble_model, build_model, client_round, model_state
from fedmm.federated.messages import Message, MessageError
from fedmm.federated.params import shared_shapes
from fedmm.federated.strategies import strategy_from_config
from fedmm.federated.train import predict
from fedmm.io import save_arrays, write_json
from fedmm.metrics import classification_metrics
from fedmm.models.surrogate import GlobalVectors

def read_federation(folder: str | Path) -> tuple[RunConfig, FederationInfo]:
    """The run config and the federation facts the server published in ``folder``
    (``config.toml``, ``federation.json``)."""
    folder = Path(folder)
    cfg = read_config(folder / "config.toml", "the server publishes it with 'fedmm server init'")
    return cfg, FederationInfo.load(folder / "federation.json")


def client_identity(client_dir: Path, info: FederationInfo) -> tuple[str, int]:
    """(name, index) of the client owning ``client_dir``: its folder name, its place in the federation."""
    name = Path(os.path.abspath(client_dir)).name
    if name not in info.clients:
        raise MessageError(f"{client_dir}: client {name!r} is not part of this federation "
                           f"(known: {', '.join(info.clients[:8])}{' ...' if len(info.clients) > 8 else ''})")
    return name, info.clients.index(name)


def head_shapes(cfg: RunConfig, info: FederationInfo) -> tuple[dict[str, tuple], int]:
    """Shapes of the federated tensors and the head width d (what the server may send)."""
    model = build_model(cfg, info.vocab_size, len(info.classes), 0)
    return shared_shapes(model, strategy_from_config(cfg).spec), model.head.d


def load_client_data(client_dir: Path, shared_dir: Path, cfg: RunConfig, info: FederationInfo) -> ClientData:
    """Encode the client's train/val splits and the distributed public set, as the simulator does."""
    client_dir, shared_dir = Path(client_dir), Path(shared_dir)
    name, index = client_identity(client_dir, info)
    tok = load_tokenizer(shared_dir / "tokenizer")
    if len(tok) != info.vocab_size:
        raise MessageError(f"{shared_dir / 'tokenizer'}: {len(tok)} tokens, the federation uses {info.vocab_size}")

    def encode(folder: Path, require_labels: bool = True) -> EncodedSplit:
        data = load_manifest(folder, classes=info.classes, require_labels=require_labels)
        return hide_modality(encode_split(data, tok, cfg.data.image_size, cfg.data.max_len), cfg.data.modalities)

    public = encode(shared_dir / "public", require_labels=False)
    if len(public) != info.n_public:
        raise MessageError(f"{shared_dir / 'public'}: {len(public)} usable rows, the federation uses {info.n_public}")
    train, val = encode(client_dir / "train"), encode(client_dir / "val")
    if len(train) == 0:
        raise MessageError(f"{client_dir / 'train'}: no usable training rows")
    return ClientData(name, index, train, val, public, list(info.classes), info.multilabel)


def files_fingerprint(*folders: Path) -> str:
    """SHA-256 over (path, size, mtime) of every file under ``folders`` (links followed): changes when a
    file is added, removed, replaced or rewritten."""
    h = hashlib.sha256()
    for top in folders:
        h.update(f"\0{os.path.abspath(top)}".encode())
        for folder, dirs, files in os.walk(top, followlinks=True):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                h.update(f"\0{os.path.relpath(path, top)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


class ClientCache:
    """What a long-lived client process keeps between messages: the encoded splits of its client and
    the broadcast shapes of the current configuration.

    Each holds one entry; its key is the client folder, the shared folder, the whole published
    configuration, the federation facts and a fingerprint of every data and tokenizer file, so a
    message for another client, another configuration or changed files on disk encodes afresh and
    replaces the entry (one client's data at most, never served to another folder). The cached
    splits are the objects the in-process engine also reuses across rounds: the client steps only
    read them.
    """

    def __init__(self) -> None:
        self._data: tuple[str, ClientData] | None = None
        self._shapes: tuple[str, tuple[dict[str, tuple], int]] | None = None
        self.hits = self.misses = 0

    @staticmethod
    def _key(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def client_data(self, client_dir: Path, shared_dir: Path, cfg: RunConfig, info: FederationInfo) -> ClientData:
        """:func:`load_client_data`, encoded once while nothing it depends on changes."""
        client_dir, shared_dir = Path(client_dir), Path(shared_dir)
        files = files_fingerprint(client_dir / "train", client_dir / "val", shared_dir / "public",
                                  shared_dir / "tokenizer")
        key = self._key(os.path.abspath(client_dir), os.path.abspath(shared_dir), to_toml(cfg),
                        json.dumps(asdict(info), sort_keys=True), files)
        if self._data is not None and self._data[0] == key:
            self.hits += 1
            return self._data[1]
        self.misses += 1
        self._data = None                     # drop the old entry before encoding the new one
        data = load_client_data(client_dir, shared_dir, cfg, info)
        self._data = (key, data)
        return data

    def head_shapes(self, cfg: RunConfig, info: FederationInfo) -> tuple[dict[str, tuple], int]:
        """:func:`head_shapes`, computed once per configuration and federation."""
        key = self._key(to_toml(cfg), json.dumps(asdict(info), sort_keys=True))
        if self._shapes is None or self._shapes[0] != key:
            self._shapes = (key, head_shapes(cfg, info))
        return self._shapes[1]


def _apply_local(cfg: RunConfig, device: str | None, threads: int | None) -> torch.device:
    """Site-local settings (device, CPU threads) override the published config."""
    if threads:
        cfg.threads = int(threads)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return resolve_device(device or cfg.device)


def _prepare(client_dir: Path, shared_dir: Path, broadcast: Message, cfg: RunConfig, info: FederationInfo,
             cache: ClientCache | None) -> tuple[int, ClientData]:
    """Validate ``broadcast`` against the configuration's shapes, then the client's encoded data."""
    shapes, d = cache.head_shapes(cfg, info) if cache is not None else head_shapes(cfg, info)
    r = check_broadcast(broadcast, broadcast_spec(shapes, d, len(info.classes)), info.n_public)
    loaded = cache.client_data if cache is not None else load_client_data
    return r, loaded(client_dir, shared_dir, cfg, info)


def train_step(client_dir: Path, shared_dir: Path, broadcast: Message, cfg: RunConfig, info: FederationInfo,
               device: str | None = None, threads: int | None = None, cache: ClientCache | None = None) -> Message:
    """Client steps of one round on the global state ``broadcast``; returns the upload. ``cache`` keeps
    the encoded data between calls (a long-lived client process)."""
    dev = _apply_local(cfg, device, threads)
    _, data = _prepare(client_dir, shared_dir, broadcast, cfg, info, cache)
    store = ClientStateStore(Path(client_dir) / "state")
    r = int(broadcast.meta["round"])
    upload, state = client_round(data, broadcast, cfg, strategy_from_config(cfg), store.read(r - 1),
                                 info.vocab_size, dev)
    if state is not None:
        store.write(state, r)
    return upload


def update_step(client_dir: Path, shared_dir: Path, broadcast: Message, cfg: RunConfig, info: FederationInfo,
                device: str | None = None, threads: int | None = None, cache: ClientCache | None = None) -> dict:
    """Take in the global state after ``broadcast.meta['round']`` rounds: own encoders + global shared part
    -> ``best_model.safetensors``; returns the deployed model's validation metrics."""
    dev = _apply_local(cfg, device, threads)
    r, data = _prepare(client_dir, shared_dir, broadcast, cfg, info, cache)
    strategy = strategy_from_config(cfg)
    store = ClientStateStore(Path(client_dir) / "state")
    trained = store.rounds()
    model = assemble_model(cfg, info.vocab_size, len(info.classes), data.index, dev, state=store.read(r - 1),
                           shared=broadcast.arrays if strategy.share else None)
    gv = GlobalVectors.from_arrays(broadcast.arrays) if strategy.prototypes else None
    scores = {"macro_f1": 0.0, "accuracy": 0.0}
    if len(data.val):
        logits = predict(model, data.val, dev, gv, batch_size=cfg.train.eval_batch_size)["full"]
        m = classification_metrics(logits, data.val.labels.numpy(), data.classes, data.multilabel)
        scores = {"macro_f1": float(m["macro_f1"]), "accuracy": float(m["accuracy"])}
    out = Path(client_dir)
    save_arrays(out / "best_model.safetensors", model_state(model))
    local_round = max([x for x in trained if x <= r - 1], default=None)
    report = {"client": data.name, "global_round": r, "local_round": local_round, "n_val": len(data.val),
              "val_macro_f1": scores["macro_f1"], "val_accuracy": scores["accuracy"]}
    write_json(out / "best_model.json", report)
    return report
