"""Safe persistence: safetensors + JSON only (never pickle), atomic writes, run directories.

The readers are a trust boundary (uploads, broadcasts, checkpoints): :func:`load_arrays`
checks a safetensors header against the file's size before anything is allocated, and
both readers report a malformed file as :class:`MessageError` naming it.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

MAX_HEADER_BYTES = 1 << 20   # a safetensors header (names, shapes, offsets) larger than this is refused
# safetensors dtypes numpy can hold, with their width in bytes
ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "U32": 4, "I32": 4, "F32": 4,
             "U64": 8, "I64": 8, "F64": 8, "C64": 8}


class MessageError(ValueError):
    """A received message or file is malformed (names the file and the problem)."""


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile value must not flood the error text)."""
    try:
        text = repr(value)
    except ValueError:        # an integer beyond Python's 4300-digit conversion limit
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _unique_keys(pairs: list) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_json(path: str | Path, max_bytes: int | None = None) -> Any:
    """Parse a UTF-8 JSON file; :class:`MessageError` naming it when it is not JSON or exceeds ``max_bytes``."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = fh.read() if max_bytes is None else fh.read(min(size, max_bytes) + 1)
    if max_bytes is not None and max(size, len(raw)) > max_bytes:
        raise MessageError(f"{path}: larger than {max_bytes} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError, digit limit, nesting
        raise MessageError(f"{path}: not valid JSON ({exc})") from exc


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Atomically save named numpy arrays as safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _size_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_safetensors(path: str | Path) -> None:
    """Check a safetensors file's header (length, JSON, dtypes, shapes, offsets) against its size.

    Reads at most 8 + :data:`MAX_HEADER_BYTES` bytes and allocates nothing the
    file does not hold; raises :class:`MessageError` naming the file and the problem.
    """
    safetensors_layout(path)


def safetensors_layout(path: str | Path) -> tuple[int, dict[str, dict]]:
    """:func:`check_safetensors`, returning where the data section starts and the checked header
    (name -> ``{"dtype", "shape", "data_offsets"}``, offsets relative to the data section)."""
    size = os.path.getsize(path)

    def bad(why: str) -> MessageError:
        return MessageError(f"{path}: unreadable safetensors file: {why}")

    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise bad(f"declares a {n}-byte header in a {size}-byte file (at most {MAX_HEADER_BYTES})")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise bad(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ must map names to strings")
    spans = []
    for name, e in header.items():
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
            raise bad(f"entry {short_repr(name)} must hold dtype, shape and data_offsets")
        dtype, shape, offsets, what = e["dtype"], e["shape"], e["data_offsets"], short_repr(name)
        if not isinstance(dtype, str) or dtype not in ST_DTYPES:
            raise bad(f"{what} has unsupported dtype {short_repr(dtype)}")
        if not isinstance(shape, list) or len(shape) > 64 or not all(_size_ok(s) for s in shape):
            raise bad(f"{what} has a bad shape {short_repr(shape)}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_size_ok(o) for o in offsets):
            raise bad(f"{what} has bad data_offsets {short_repr(offsets)}")
        need = math.prod(shape) * ST_DTYPES[dtype]
        if offsets[1] - offsets[0] != need:
            raise bad(f"{what} is {dtype}{short_repr(shape)}, {short_repr(need)} bytes, "
                      f"but data_offsets are {short_repr(offsets)}")
        spans.append((offsets[0], offsets[1], what))
    pos = 0
    for begin, end, what in sorted(spans):
        if begin != pos:
            raise bad(f"{what}: data_offsets overlap or leave a gap")
        pos = end
    if pos != size - 8 - n:
        raise bad(f"data section holds {size - 8 - n} bytes, the arrays cover {short_repr(pos)}")
    return 8 + n, header


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Load a safetensors file into numpy arrays (no code execution possible).

    The header is checked first (:func:`check_safetensors`); a malformed file raises
    :class:`MessageError` naming it, a missing one FileNotFoundError.
    """
    check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as exc:  # anything the header check let through (safetensors' own checks)
        raise MessageError(f"{path}: unreadable safetensors file: {exc}") from exc


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
