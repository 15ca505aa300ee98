"""fedmm messages <-> Flower records, without pickle.

All arrays of a message travel packed into one byte array (an ``ArrayRecord`` with
a single ``Array``, which Flower serialises with ``np.save(allow_pickle=False)``)
plus a JSON index of (name, dtype, shape, offset) in a ``ConfigRecord``; the
metadata is JSON text there too, and the client's scores also go in a
``MetricRecord`` for Flower's own tools. Packing matters: Flower moves every
``Array`` as separate objects, one HTTP request each per hop, so a global state
of a few hundred tensors would cost over a thousand requests per client and round;
packed it is a handful of 5 MB chunks. Decoding checks the index against the
buffer (known dtypes, sizes that add up, no overlap); the receiver then validates
what it decodes (:func:`fedmm.engines.wire.check_upload`,
:func:`~fedmm.engines.wire.check_broadcast`).
"""
from __future__ import annotations

import json
import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmm.engines.wire import check_finite
from fedmm.federated.messages import Message, MessageError

ARRAYS, META, METRICS = "fedmm.arrays", "fedmm.meta", "fedmm.metrics"
PACKED, INDEX = "packed", "index"
DTYPES = ("<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1")   # what a message may hold


def pack_arrays(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
    """One uint8 buffer [total bytes] with every array's bytes back to back, and its index
    ``[[name, dtype, shape, offset], ...]`` (little-endian, C order)."""
    index, parts, offset = [], [], 0
    for name, value in arrays.items():
        a = np.asarray(value, order="C")          # (ascontiguousarray would make a 0-d array 1-d)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False) if a.dtype.byteorder == ">" else a
        if a.dtype.str not in DTYPES:
            raise MessageError(f"{name}: dtype {a.dtype} cannot travel in a fedmm message")
        index.append([name, a.dtype.str, list(a.shape), offset])
        parts.append(a.reshape(-1).view(np.uint8))
        offset += a.nbytes
    buf = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return buf, index


def unpack_arrays(buf: np.ndarray, index: object, where: str) -> dict[str, np.ndarray]:
    """Arrays (own copies) of a buffer written by :func:`pack_arrays`; MessageError unless the index
    describes the buffer exactly: known dtypes, integer shapes, consecutive parts, every byte used."""
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise MessageError(f"{where}: packed arrays must be a 1-D uint8 buffer")
    if not isinstance(index, list):
        raise MessageError(f"{where}: array index must be a list")
    out, offset = {}, 0
    for entry in index:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and entry[1] in DTYPES and isinstance(entry[2], list) and entry[3] == offset
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry[2])):
            raise MessageError(f"{where}: bad array index entry {str(entry)[:80]}")
        name, dtype, shape = entry[0], np.dtype(entry[1]), tuple(entry[2])
        if name in out:
            raise MessageError(f"{where}: array {name!r} appears twice")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > len(buf):
            raise MessageError(f"{where}: array {name!r} runs past the end of the packed buffer")
        out[name] = buf[offset:offset + nbytes].view(dtype).reshape(shape).copy()
        offset += nbytes
    if offset != len(buf):
        raise MessageError(f"{where}: {len(buf) - offset} bytes of the packed buffer belong to no array")
    return out


def to_records(msg: Message, extra: dict[str, str] | None = None) -> RecordDict:
    """A fedmm message as a RecordDict; ``extra`` adds text entries (config, federation facts)."""
    buf, index = pack_arrays(msg.arrays)
    arrays = ArrayRecord({PACKED: Array(buf)})
    meta = ConfigRecord({"kind": msg.kind, "meta": json.dumps(msg.meta), INDEX: json.dumps(index), **(extra or {})})
    records = {ARRAYS: arrays, META: meta}
    if msg.kind == "upload":
        records[METRICS] = MetricRecord({k: float(msg.meta[k]) for k in ("n_train", "val_score", "train_loss")
                                         if isinstance(msg.meta.get(k), (int, float))})
    return RecordDict(records)


def from_records(content: RecordDict, kind: str) -> tuple[Message, dict]:
    """Decode a RecordDict written by :func:`to_records`; returns the message and the extra text entries."""
    where = f"Flower {kind} message"
    try:
        meta_rec = content.config_records[META]
        record = content.array_records[ARRAYS]
        if set(record.keys()) != {PACKED}:
            raise KeyError(f"{ARRAYS} must hold only {PACKED!r}")
        buf = record[PACKED].numpy()
        meta, index = json.loads(meta_rec["meta"]), json.loads(meta_rec[INDEX])
    except (KeyError, ValueError, TypeError) as exc:
        raise MessageError(f"Flower message: not a fedmm {kind} ({exc!r})") from exc
    if meta_rec.get("kind") != kind or not isinstance(meta, dict):
        raise MessageError(f"Flower message: expected a {kind!r} message, got {meta_rec.get('kind')!r}")
    msg = Message(kind, unpack_arrays(buf, index, where), meta)
    check_finite(msg, where)
    extra = {k: v for k, v in meta_rec.items() if k not in ("kind", "meta", INDEX)}
    return msg, extra
