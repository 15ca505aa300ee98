"""fedmm messages <-> Flower records, without pickle.

Arrays travel as an ``ArrayRecord`` (Flower serialises numpy arrays with
``np.save(allow_pickle=False)``), metadata as JSON text in a ``ConfigRecord``,
and the client's scores also as a ``MetricRecord`` for Flower's own tools.
The receiver validates what it decodes (:func:`fedmm.engines.transport.check_upload`,
:func:`~fedmm.engines.transport.check_broadcast`).
"""
from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmm.federated.messages import Message, MessageError

ARRAYS, META, METRICS = "fedmm.arrays", "fedmm.meta", "fedmm.metrics"


def to_records(msg: Message, extra: dict[str, str] | None = None) -> RecordDict:
    """A fedmm message as a RecordDict; ``extra`` adds text entries (config, federation facts)."""
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in msg.arrays.items()})
    meta = ConfigRecord({"kind": msg.kind, "meta": json.dumps(msg.meta), **(extra or {})})
    records = {ARRAYS: arrays, META: meta}
    if msg.kind == "upload":
        records[METRICS] = MetricRecord({k: float(msg.meta[k]) for k in ("n_train", "val_score", "train_loss")
                                         if isinstance(msg.meta.get(k), (int, float))})
    return RecordDict(records)


def from_records(content: RecordDict, kind: str) -> tuple[Message, dict]:
    """Decode a RecordDict written by :func:`to_records`; returns the message and the extra text entries."""
    try:
        meta_rec = content.config_records[META]
        arrays = {k: a.numpy() for k, a in content.array_records[ARRAYS].items()}
        meta = json.loads(meta_rec["meta"])
    except (KeyError, ValueError, TypeError) as exc:
        raise MessageError(f"Flower message: not a fedmm {kind} ({exc!r})") from exc
    if meta_rec.get("kind") != kind or not isinstance(meta, dict):
        raise MessageError(f"Flower message: expected a {kind!r} message, got {meta_rec.get('kind')!r}")
    msg = Message(kind, arrays, meta)
    msg.check_finite(f"Flower {kind} message")
    extra = {k: v for k, v in meta_rec.items() if k not in ("kind", "meta")}
    return msg, extra
