"""Messages between client and server: named numpy arrays + JSON metadata, never pickled.

On disk a message is ``<stem>.safetensors`` (arrays) + ``<stem>.json`` (kind, metadata,
and the name/shape/dtype of every array). :meth:`Message.load` checks the two
agree and that every array is finite; :func:`check_arrays` validates names,
shapes and dtypes against what the receiver expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmm.io import MessageError, load_arrays, read_json, save_arrays, short_repr, write_json

__all__ = ["MAX_INDEX_BYTES", "Message", "MessageError", "check_arrays", "short_repr"]

MAX_INDEX_BYTES = 1 << 20   # a message's JSON index (kind, meta, array list) larger than this is refused


def _index_entry_ok(entry) -> bool:
    """``[shape, dtype]`` with a list of non-negative integer sizes and a dtype name."""
    return (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list) and isinstance(entry[1], str)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry[0]))


@dataclass
class Message:
    kind: str                                        # "broadcast" | "upload"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def save(self, stem: str | Path) -> None:
        """Write arrays first, then the JSON index (its presence marks a complete message)."""
        stem = Path(stem)
        save_arrays(stem.with_suffix(".safetensors"), self.arrays)
        index = {name: [list(a.shape), str(a.dtype)] for name, a in self.arrays.items()}
        write_json(stem.with_suffix(".json"), {"kind": self.kind, "meta": self.meta, "arrays": index})

    @classmethod
    def load(cls, stem: str | Path, kind: str | None = None) -> "Message":
        """Read ``<stem>.json`` + ``<stem>.safetensors`` and check they agree (names, shapes, dtypes,
        finite values); :class:`MessageError` naming the file and the problem otherwise."""
        stem = Path(stem)
        jpath, apath = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        try:
            header = read_json(jpath, MAX_INDEX_BYTES)
        except FileNotFoundError as exc:
            raise MessageError(f"{exc.filename}: missing") from exc
        except OSError as exc:
            raise MessageError(f"{jpath}: unreadable message ({exc.strerror or exc})") from exc
        if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
            raise MessageError(f"{jpath}: header must be an object with a 'meta' object")
        if not isinstance(header.get("kind"), str):
            raise MessageError(f"{jpath}: header 'kind' must be a string, got {short_repr(header.get('kind'))}")
        if kind is not None and header["kind"] != kind:
            raise MessageError(f"{jpath}: expected a {kind!r} message, got {short_repr(header['kind'])}")
        index = header.get("arrays", {})
        if not isinstance(index, dict) or not all(_index_entry_ok(e) for e in index.values()):
            raise MessageError(f"{jpath}: header 'arrays' must map names to [shape, dtype]")
        try:
            arrays = load_arrays(apath) if apath.exists() or index else {}
        except FileNotFoundError as exc:
            raise MessageError(f"{exc.filename}: missing") from exc
        except OSError as exc:
            raise MessageError(f"{apath}: unreadable message ({exc.strerror or exc})") from exc
        if set(index) != set(arrays):
            diff = sorted(set(arrays) ^ set(index))
            raise MessageError(f"{stem}: arrays {short_repr(diff)} differ between index and data")
        for name, (shape, dtype) in index.items():
            a = arrays[name]
            if list(a.shape) != shape or str(a.dtype) != dtype:
                raise MessageError(f"{apath}: {name[:100]} is {a.dtype}{list(a.shape)}, "
                                   f"index says {dtype[:20]}{short_repr(shape)}")
        msg = cls(header["kind"], arrays, header["meta"])
        msg.check_finite(str(apath))
        return msg

    def check_finite(self, where: str = "message") -> None:
        """Raise :class:`MessageError` when a float array holds NaN/Inf."""
        for name, a in self.arrays.items():
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise MessageError(f"{where}: array {name} has NaN/Inf values")


def check_arrays(arrays: dict[str, np.ndarray], expected: dict[str, tuple], where: str,
                 required: set[str] | frozenset = frozenset()) -> None:
    """Every array must be expected (exact name) with the expected shape; ``required`` names must exist.

    ``expected`` maps names to shapes; a ``None`` entry in a shape accepts any size.
    Float arrays must be float32, index arrays int64.
    """
    missing = required - set(arrays)
    if missing:
        raise MessageError(f"{where}: missing arrays {sorted(missing)}")
    for name, a in arrays.items():
        if name not in expected:
            raise MessageError(f"{where}: unexpected array {short_repr(name)}")
        if not isinstance(a, np.ndarray):
            raise MessageError(f"{where}: {name} is a {type(a).__name__}, not an array")
        shape = expected[name]
        if len(shape) != a.ndim or any(s is not None and s != n for s, n in zip(shape, a.shape)):
            raise MessageError(f"{where}: {name} has shape {list(a.shape)}, expected {list(shape)}")
        if a.dtype not in (np.float32, np.int64):
            raise MessageError(f"{where}: {name} has dtype {a.dtype}, expected float32 or int64")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise MessageError(f"{where}: {name} has NaN/Inf values")
