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

from fedmm.io import load_arrays, read_json, save_arrays, write_json


class MessageError(ValueError):
    """A received message is malformed (names the file and the problem)."""


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
        stem = Path(stem)
        jpath, apath = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        try:
            header = read_json(jpath)
            arrays = load_arrays(apath) if apath.exists() or header.get("arrays") else {}
        except FileNotFoundError as exc:
            raise MessageError(f"{exc.filename}: missing") from exc
        except Exception as exc:  # corrupt JSON or safetensors
            raise MessageError(f"{stem}: unreadable message ({exc})") from exc
        if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
            raise MessageError(f"{jpath}: header must be an object with a 'meta' object")
        if kind is not None and header.get("kind") != kind:
            raise MessageError(f"{jpath}: expected a {kind!r} message, got {header.get('kind')!r}")
        index = header.get("arrays", {})
        if set(index) != set(arrays):
            raise MessageError(f"{stem}: arrays {sorted(set(arrays) ^ set(index))} differ between index and data")
        for name, (shape, dtype) in index.items():
            a = arrays[name]
            if list(a.shape) != shape or str(a.dtype) != dtype:
                raise MessageError(f"{apath}: {name} is {a.dtype}{list(a.shape)}, index says {dtype}{shape}")
        msg = cls(header["kind"], arrays, header["meta"])
        msg.check_finite(str(apath))
        return msg

    def check_finite(self, where: str = "message") -> None:
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
            raise MessageError(f"{where}: unexpected array {name!r}")
        shape = expected[name]
        if len(shape) != a.ndim or any(s is not None and s != n for s, n in zip(shape, a.shape)):
            raise MessageError(f"{where}: {name} has shape {list(a.shape)}, expected {list(shape)}")
        if a.dtype not in (np.float32, np.int64):
            raise MessageError(f"{where}: {name} has dtype {a.dtype}, expected float32 or int64")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise MessageError(f"{where}: {name} has NaN/Inf values")
