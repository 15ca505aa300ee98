"""The Flower ClientApp: one hospital's client steps, run by its SuperNode.

Node configuration (``flower-supernode --node-config``): ``client-dir`` (the
hospital's client folder, e.g. ``/data/fedmm/client_3``; required), ``shared-dir``
(the distributed ``server/global_vectors`` folder with the public set and the
tokenizer; default ``<client-dir>/../server/global_vectors``), ``device``
(default: the run config's) and ``threads`` (CPU threads, default: the run config's).

A TRAIN message carries the global state, the run configuration and the
federation facts; the reply is the client's upload. An EVALUATE message carries
the final global state; the client writes its deployed model
(``best_model.safetensors``) and replies with its validation scores.

``app`` is what Flower's own ``subprocess`` isolation loads in a fresh process per
message; :func:`make_client_app` with a :class:`~fedmm.engines.clientside.ClientCache`
is what the long-lived ClientApp process (:mod:`fedmm.engines.flower.worker`) runs:
the libraries stay imported and the client's encoded data stays in memory.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.clientapp import ClientApp

from fedmm.config import from_dict
from fedmm.engines.clientside import ClientCache, train_step, update_step
from fedmm.engines.flower.records import from_records, to_records
from fedmm.engines.transport import FederationInfo
from fedmm.federated.messages import MessageError


def _site(context: Context) -> tuple[Path, Path, str | None, int | None]:
    nc = context.node_config
    if "client-dir" not in nc:
        raise MessageError("this SuperNode has no client-dir in its --node-config")
    client_dir = Path(str(nc["client-dir"]))
    shared = Path(str(nc["shared-dir"])) if nc.get("shared-dir") else client_dir.parent / "server" / "global_vectors"
    device = str(nc["device"]) if nc.get("device") else None
    threads = int(nc["threads"]) if nc.get("threads") else None
    return client_dir, shared, device, threads


def _decode(msg: FlowerMessage):
    broadcast, extra = from_records(msg.content, "broadcast")
    try:
        cfg = from_dict(tomllib.loads(extra["config"]))
        raw = json.loads(extra["federation"])
        info = FederationInfo(list(raw["classes"]), bool(raw["multilabel"]), int(raw["vocab_size"]),
                              int(raw["n_public"]), list(raw["clients"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise MessageError(f"Flower message: bad config or federation facts ({exc!r})") from exc
    return broadcast, cfg, info


def make_client_app(cache: ClientCache | None = None) -> ClientApp:
    """fedmm's ClientApp; with ``cache`` the client's encoded data is kept between messages."""
    client_app = ClientApp()

    @client_app.train()
    def train(msg: FlowerMessage, context: Context) -> FlowerMessage:
        """Client steps of one round; replies with the upload."""
        client_dir, shared, device, threads = _site(context)
        broadcast, cfg, info = _decode(msg)
        upload = train_step(client_dir, shared, broadcast, cfg, info, device, threads, cache)
        return FlowerMessage(to_records(upload), reply_to=msg)

    @client_app.evaluate()
    def update(msg: FlowerMessage, context: Context) -> FlowerMessage:
        """Take in the final global state (best_model.safetensors); replies with validation scores."""
        client_dir, shared, device, threads = _site(context)
        broadcast, cfg, info = _decode(msg)
        report = update_step(client_dir, shared, broadcast, cfg, info, device, threads, cache)
        metrics = MetricRecord({"val_macro_f1": report["val_macro_f1"], "val_accuracy": report["val_accuracy"],
                                "n_val": float(report["n_val"])})
        content = RecordDict({"fedmm.update": ConfigRecord({"report": json.dumps(report)}),
                              "fedmm.metrics": metrics})
        return FlowerMessage(content, reply_to=msg)

    return client_app


app = make_client_app()
