"""Transports: how one round's broadcast reaches the clients and their replies come back.

The round loop (:func:`fedmm.engines.loop.run_rounds`) is written once; a
transport only moves messages: ``exchange(broadcast, round) -> (replies, problems)``
(and ``finish(state)`` after the last round). Three exist: :class:`InProcessTransport`
(here), the file exchange (:mod:`fedmm.engines.files`) and Flower
(:mod:`fedmm.engines.flower`). Every reply goes through
:func:`fedmm.engines.loop.accept` (:func:`~fedmm.engines.wire.check_upload`,
:func:`~fedmm.engines.wire.order_uploads`)
before the server uses it; the message contract both sides check lives in
:mod:`fedmm.engines.wire`. :class:`FederationInfo` is what every side knows of the federation.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from fedmm.engines.store import ClientStore
from fedmm.engines.wire import MAX_INDEX_BYTES, load_message, save_message
from fedmm.engines.workers import WorkerPool
from fedmm.federated.client import client_round
from fedmm.federated.messages import Message, MessageError
from fedmm.io import read_json, write_json


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


def client_job(data, broadcast: Message | Path, cfg, strategy, store: ClientStore, vocab_size: int, device,
               stem: Path) -> Path:
    """One client round (in this process or a worker): its state of the previous round from
    ``store``, the new one back to it; the upload is written to ``stem``. ``broadcast`` is the
    message itself or the stem of its files (read and validated here, as any received message)."""
    if not isinstance(broadcast, Message):
        broadcast = load_message(broadcast, "broadcast")
    r = int(broadcast.meta["round"])
    upload, state = client_round(data, broadcast, cfg, strategy, store.read(r - 1) if r > 0 else None,
                                 vocab_size, device)
    if state is not None:
        store.write(state, r)
    save_message(upload, stem)
    return stem


LAZY = "shared/"   # upload arrays the server reads from their file when it aggregates (the large ones)


def client_cost(data) -> int:
    """Relative cost of a client's round: its training rows with an image plus those with a report."""
    return int(data.train.has_image.sum()) + int(data.train.has_text.sum())


class InProcessTransport:
    """Clients of this machine (one after another, or side by side in ``pool``'s worker processes);
    their state lives in RUN_DIR/clients/<name>/, uploads pass through RUN_DIR/exchange/.

    A round's uploads stay on disk until the next exchange (or :meth:`finish`): their federated
    tensors are read from there in slices when the server aggregates, so the server's memory does
    not grow with the number of clients."""

    def __init__(self, fed, cfg, strategy, run_dir: Path, device, reporter, pool: WorkerPool | None = None) -> None:
        self.fed, self.cfg, self.strategy = fed, cfg, strategy
        self.device, self.reporter, self.pool = device, reporter, pool or WorkerPool(1, 0)
        self.exchange_dir = Path(run_dir) / "exchange"
        self.stores = {c.name: ClientStore(Path(run_dir) / "clients" / c.name) for c in fed.clients}

    def exchange(self, broadcast: Message, round_idx: int) -> tuple[list[Reply], list[str]]:
        self._clear()   # the previous round's uploads: aggregated by now
        folder = self.exchange_dir / f"round_{round_idx:04d}"
        sent: Message | Path = broadcast
        costs = None
        if self.pool.workers > 1:   # workers read the broadcast from one file, not one pickled copy per job
            sent = self.exchange_dir / f"broadcast_{round_idx:04d}"   # beside the round folder: no name clash
            save_message(broadcast, sent)
            costs = [client_cost(data) for data in self.fed.clients]
        jobs = [(data, sent, self.cfg, self.strategy, self.stores[data.name], self.fed.vocab_size, self.device,
                 folder / data.name) for data in self.fed.clients]
        replies: dict[int, Reply] = {}
        problems: list[str] = []
        for i, stem in self.pool.run(client_job, jobs, costs):
            name = self.fed.clients[i].name
            try:
                up = load_message(stem, "upload", lazy=LAZY)
            except MessageError as exc:
                problems.append(f"{name}: upload rejected: {exc}")
                continue
            replies[i] = Reply(name, up, name)
            self.reporter.client_done(name, up.meta)
        return [replies[i] for i in sorted(replies)], problems

    def _clear(self) -> None:
        shutil.rmtree(self.exchange_dir, ignore_errors=True)

    def finish(self, state) -> None:
        """Nothing to deliver (evaluation reads the client stores directly); the last uploads go."""
        self._clear()
