"""Transports: how one round's broadcast reaches the clients and their replies come back.

The round loop (:func:`fedmm.engines.loop.run_rounds`) is written once; a
transport only moves messages: ``exchange(broadcast, round) -> (replies, problems)``
(and ``finish(state)`` after the last round). Three exist: :class:`InProcessTransport`
(here), the file exchange (:mod:`fedmm.engines.files`) and Flower
(:mod:`fedmm.engines.flower`). Every reply goes through
:func:`fedmm.engines.loop.accept` (:func:`check_upload`, :func:`order_uploads`)
before the server uses it. This module also holds the message contract both sides
check: :class:`FederationInfo`, the upload and broadcast specs and their checks.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fedmm.engines.workers import WorkerPool
from fedmm.federated.client import ClientStore, client_round
from fedmm.federated.messages import MAX_INDEX_BYTES, Message, MessageError, check_arrays, short_repr
from fedmm.federated.train import VIEWS as MODALITY_VIEWS
from fedmm.io import read_json, write_json

MODALITIES = ("image_only", "text_only", "multimodal", "mixed", "none")   # none: a site with no usable rows
MAX_COUNT = 2**53                 # counts claimed in an upload's meta stay exact as floats
INDEX_KEYS = ("gv/pair_img", "gv/pair_txt", "teacher/index", "public/index", "repkd/index")


class TransportError(RuntimeError):
    """A federation could not go on (the message says why and what was kept)."""


class RoundFailed(TransportError):
    """A round could not complete (too few valid uploads); the last global state is kept."""


@dataclass
class Reply:
    """One message that came back to the server in a round, not yet validated."""

    source: str              # who sent it, as lines about it name it ("client_3", "node 12")
    message: Message
    client: str | None = None  # the client it came from when the transport knows (its upload must claim it)
    announce: bool = False     # reporter.client_done once it is accepted (the transport did not report it)


class Transport(Protocol):
    stores: dict[str, ClientStore]    # where each client's model state lives (final evaluation)

    def exchange(self, broadcast: Message, round_idx: int) -> tuple[list[Reply], list[str]]: ...
    def finish(self, state) -> None: ...


@dataclass
class FederationInfo:
    """What the server (and each client) must know about the federation; no patient data."""

    classes: list[str]
    multilabel: bool
    vocab_size: int
    n_public: int
    clients: list[str]                # client names in federation order (aggregation order)

    @classmethod
    def from_federation(cls, fed) -> "FederationInfo":
        return cls(list(fed.classes), bool(fed.multilabel), int(fed.vocab_size), len(fed.public),
                   [c.name for c in fed.clients])

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "FederationInfo":
        """Read a published federation description; :class:`MessageError` naming the file when malformed."""
        try:
            raw = read_json(path, MAX_INDEX_BYTES)
            info = cls(list(raw["classes"]), bool(raw["multilabel"]), int(raw["vocab_size"]), int(raw["n_public"]),
                       list(raw["clients"]))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{path}: missing (the server publishes it with 'fedmm server init')") from exc
        except (KeyError, TypeError, ValueError, OverflowError) as exc:   # ValueError includes MessageError
            raise MessageError(f"{path}: not a valid federation description ({exc})") from exc
        if not info.classes or not all(isinstance(c, str) for c in info.classes) \
                or not all(isinstance(c, str) and c for c in info.clients):
            raise MessageError(f"{path}: needs classes and client names")
        return info


VIEWS = tuple(MODALITY_VIEWS)


def upload_spec(shared_shapes: dict[str, tuple], d: int, n_classes: int) -> dict[str, tuple]:
    """Every array a client may upload, with its shape (None = any length)."""
    spec = {f"shared/{k}": s for k, s in shared_shapes.items()}
    for mod in ("image", "text"):
        spec.update({f"summary/{mod}_centroids": (None, d), f"summary/{mod}_counts": (None,),
                     f"summary/{mod}_hist": (None, n_classes), f"public/{mod}_reps": (None, d)})
    spec.update({f"public/{v}_logits": (None, n_classes) for v in VIEWS})
    return spec


def broadcast_spec(shared_shapes: dict[str, tuple], d: int, n_classes: int) -> dict[str, tuple]:
    """Every array the server may broadcast, with its shape (None = any length)."""
    spec = {f"shared/{k}": s for k, s in shared_shapes.items()}
    spec.update({"gv/img_centers": (None, d), "gv/txt_centers": (None, d), "gv/pair_img": (None,),
                 "gv/pair_txt": (None,), "gv/hist_img": (None, n_classes), "gv/hist_txt": (None, n_classes),
                 "gv/prototypes": (None, 2 * d), "teacher/index": (None,), "public/index": (None,),
                 "repkd/index": (None,), "repkd/image": (None, d), "repkd/text": (None, d)})
    spec.update({f"teacher/{v}_probs": (None, n_classes) for v in VIEWS})
    return spec


def _finite_number(meta: dict, key: str, where: str, label: str | None = None) -> float:
    v = meta.get(key)
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    except OverflowError:        # an integer beyond the float range
        ok = False
    if not ok:
        raise MessageError(f"{where}: meta {label or key!r} must be a finite number, got {short_repr(v)}")
    return float(v)


def _count(meta: dict, key: str, where: str, least: int, default=None) -> int:
    v = meta.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not least <= v < MAX_COUNT:
        raise MessageError(f"{where}: meta {key!r} must be an integer in [{least}, 2**53), got {short_repr(v)}")
    return v


def check_upload(msg: Message, spec: dict[str, tuple], round_idx: int, clients: list[str],
                 n_logits: int | None = None) -> str:
    """Validate an upload (kind, metadata, array names/shapes/dtypes/values); return the client name.

    ``n_logits`` is the number of public rows whose logits this round asked for.
    Raises :class:`MessageError` naming the client and the problem.
    """
    if not isinstance(msg.meta, dict) or not isinstance(msg.arrays, dict):
        raise MessageError(f"upload (round {round_idx}): meta and arrays must be mappings")
    meta, name = msg.meta, msg.meta.get("client")
    where = f"upload of {short_repr(name)} (round {round_idx})"
    if msg.kind != "upload":
        raise MessageError(f"{where}: expected an 'upload' message, got {short_repr(msg.kind)}")
    if not isinstance(name, str) or name not in clients:
        raise MessageError(f"{where}: unknown client (federation has {len(clients)} clients)")
    r = meta.get("round")
    if isinstance(r, bool) or not isinstance(r, int) or r != round_idx:
        raise MessageError(f"{where}: it answers round {short_repr(r)}")
    _count(meta, "n_train", where, 1)
    if not 0.0 <= _finite_number(meta, "val_score", where) <= 1.0:
        raise MessageError(f"{where}: meta 'val_score' must lie in [0, 1]")
    scores = meta.get("val_scores", {})
    if not isinstance(scores, dict) or not set(scores) <= set(VIEWS):
        raise MessageError(f"{where}: meta 'val_scores' must map views {VIEWS} to scores")
    for view in scores:
        if not 0.0 <= _finite_number(scores, view, where, f"val_scores.{view}") <= 1.0:
            raise MessageError(f"{where}: meta 'val_scores' must lie in [0, 1]")
    for key in ("n_val", "val_classes"):
        _count(meta, key, where, 0, default=0)
    _finite_number(meta, "train_loss", where)
    groups = meta.get("trained_groups")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise MessageError(f"{where}: meta 'trained_groups' must be a list of names")
    if meta.get("modality") not in MODALITIES:
        raise MessageError(f"{where}: meta 'modality' must be one of {MODALITIES}")
    check_arrays(msg.arrays, spec, where)
    a = msg.arrays
    for key, arr in a.items():
        if arr.dtype != np.float32:
            raise MessageError(f"{where}: {key} has dtype {arr.dtype}, expected float32")
    for mod in ("image", "text"):
        parts = [f"summary/{mod}_{k}" for k in ("centroids", "counts", "hist")]
        present = [p in a for p in parts]
        if any(present) and not all(present):
            raise MessageError(f"{where}: {mod} summary is incomplete")
        if all(present):
            if not len(a[parts[0]]) == len(a[parts[1]]) == len(a[parts[2]]):
                raise MessageError(f"{where}: {mod} centroids, counts and histograms differ in length")
            if (a[parts[1]] < 0).any() or (a[parts[2]] < 0).any():
                raise MessageError(f"{where}: {mod} counts/histograms must be >= 0")
    for key in a:
        if key.startswith("public/") and n_logits is not None and len(a[key]) != n_logits:
            raise MessageError(f"{where}: {key} has {len(a[key])} rows, expected {n_logits}")
    return name


def check_broadcast(msg: Message, spec: dict[str, tuple], n_public: int) -> int:
    """Validate a received broadcast (client side); return its round."""
    if not isinstance(msg.meta, dict) or not isinstance(msg.arrays, dict):
        raise MessageError("global state: meta and arrays must be mappings")
    r = msg.meta.get("round")
    if msg.kind != "broadcast" or isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise MessageError(f"global state: expected a 'broadcast' message with a round, got {short_repr(msg.kind)} "
                           f"round {short_repr(r)}")
    students = msg.meta.get("students", [])
    if not isinstance(students, list) or not all(isinstance(s, str) for s in students):
        raise MessageError("global state: meta 'students' must be a list of client names")
    where = f"global state (round {r})"
    check_arrays(msg.arrays, spec, where)
    a = msg.arrays
    for key in INDEX_KEYS:
        if key in a and a[key].dtype != np.int64:
            raise MessageError(f"{where}: {key} has dtype {a[key].dtype}, expected int64")
    gv = [k for k in spec if k.startswith("gv/")]
    if any(k in a for k in gv) and not all(k in a for k in gv):
        raise MessageError(f"{where}: global vectors incomplete (missing {sorted(k for k in gv if k not in a)})")
    if any(k in a for k in gv):
        n = {k: len(a.get(k, ())) for k in gv}
        if len({n.get("gv/pair_img"), n.get("gv/pair_txt"), n.get("gv/prototypes")}) > 1 \
                or n.get("gv/hist_img") != n.get("gv/img_centers") or n.get("gv/hist_txt") != n.get("gv/txt_centers"):
            raise MessageError(f"{where}: global vectors differ in length (pairs, prototypes, centers, histograms)")
    for key, bound in (("gv/pair_img", "gv/img_centers"), ("gv/pair_txt", "gv/txt_centers")):
        if key in a and len(a[key]) and (a[key].min() < 0 or a[key].max() >= len(a.get(bound, ()))):
            raise MessageError(f"global state (round {r}): {key} indexes outside {bound}")
    for key in ("teacher/index", "public/index", "repkd/index"):
        if key in a and len(a[key]) and (a[key].min() < 0 or a[key].max() >= n_public):
            raise MessageError(f"global state (round {r}): {key} indexes outside the public set ({n_public})")
    for prefix in ("teacher/", "repkd/"):
        n_index = len(a.get(f"{prefix}index", ()))
        for key in a:
            if key.startswith(prefix) and key != f"{prefix}index" and len(a[key]) != n_index:
                raise MessageError(f"global state (round {r}): {key} and {prefix}index differ in length")
    return r


def order_uploads(uploads: list[Message], clients: list[str]) -> tuple[list[Message], list[str]]:
    """Uploads in federation order (the aggregation order every transport shares); duplicates and
    uploads naming no client of the federation dropped, one problem line each."""
    rank = {name: i for i, name in enumerate(clients)}
    seen, out, problems, known = set(), [], [], []
    for u in uploads:
        name = u.meta.get("client") if isinstance(u.meta, dict) else None
        if isinstance(name, str) and name in rank:
            known.append(u)
        else:
            problems.append(f"{short_repr(name)}: upload from an unknown client ignored")
    for u in sorted(known, key=lambda u: rank[u.meta["client"]]):
        if u.meta["client"] in seen:
            problems.append(f"{u.meta['client']}: duplicate upload ignored")
            continue
        seen.add(u.meta["client"])
        out.append(u)
    return out, problems


def n_requested_logits(broadcast: Message) -> int | None:
    idx = broadcast.arrays.get("public/index")
    return None if idx is None else int(np.asarray(idx).shape[0])


def client_job(data, broadcast: Message, cfg, strategy, store: ClientStore, vocab_size: int, device,
               stem: Path) -> Path:
    """One client round (in this process or a worker); the upload is written to ``stem``."""
    client_round(data, broadcast, cfg, strategy, store, vocab_size, device).save(stem)
    return stem


class InProcessTransport:
    """Clients of this machine (one after another, or side by side in ``pool``'s worker processes);
    their state lives in RUN_DIR/clients/<name>/, uploads pass through RUN_DIR/exchange/."""

    def __init__(self, fed, cfg, strategy, run_dir: Path, device, reporter, pool: WorkerPool | None = None) -> None:
        self.fed, self.cfg, self.strategy = fed, cfg, strategy
        self.device, self.reporter, self.pool = device, reporter, pool or WorkerPool(1, 0)
        self.exchange_dir = Path(run_dir) / "exchange"
        self.stores = {c.name: ClientStore(Path(run_dir) / "clients" / c.name) for c in fed.clients}

    def exchange(self, broadcast: Message, round_idx: int) -> tuple[list[Reply], list[str]]:
        folder = self.exchange_dir / f"round_{round_idx:04d}"
        jobs = [(data, broadcast, self.cfg, self.strategy, self.stores[data.name], self.fed.vocab_size, self.device,
                 folder / data.name) for data in self.fed.clients]
        replies: dict[int, Reply] = {}
        problems: list[str] = []
        for i, stem in self.pool.run(client_job, jobs):
            name = self.fed.clients[i].name
            try:
                up = Message.load(stem, "upload")
            except MessageError as exc:
                problems.append(f"{name}: upload rejected: {exc}")
                continue
            replies[i] = Reply(name, up, name)
            self.reporter.client_done(name, up.meta)
        shutil.rmtree(folder, ignore_errors=True)
        return [replies[i] for i in sorted(replies)], problems

    def finish(self, state) -> None:
        """Nothing to deliver: evaluation reads the client stores directly."""
