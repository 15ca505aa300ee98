"""Upload tensors read from their file in slices, on demand, so the server's memory does not grow
with the number of clients.

The server aggregates federated tensors coordinate-wise
(:func:`fedmm.federated.server.global_update` reads every client's tensor one slice at a
time), so it never needs all clients' uploads in memory at once. :func:`lazy_arrays` reads a
checked safetensors file (:func:`fedmm.io.safetensors_layout`) and returns its arrays: those
whose name starts with ``prefix`` as :class:`DiskArray` (shape, dtype, ``read(begin, end)``
of flat elements; nothing held), the rest loaded. Files are read with plain reads, never
memory-mapped, so nothing of them stays resident. A file that changes after it was read
(inode, size or modification time) is refused on every later read, so what is aggregated is
what was validated.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from fedmm.io import MessageError, safetensors_layout

# safetensors dtype -> numpy (little-endian on disk; fedmm runs on little-endian hosts)
NUMPY_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
                "F16": np.float16, "U32": np.uint32, "I32": np.int32, "F32": np.float32, "U64": np.uint64,
                "I64": np.int64, "F64": np.float64, "C64": np.complex64}
CHECK_CHUNK_BYTES = 8 << 20   # slice size of the finiteness check
if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("fedmm.engines.disk_arrays reads little-endian safetensors data in place")


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


class DiskArray:
    """One tensor of a safetensors file, read on demand (``np.asarray`` reads all of it)."""

    def __init__(self, path: Path, start: int, shape: tuple[int, ...], dtype: np.dtype,
                 stamp: tuple[int, int, int]) -> None:
        self.path, self.start, self.shape, self.dtype, self.stamp = path, start, shape, np.dtype(dtype), stamp
        self._finite: bool | None = None   # all_finite's answer for the file as stamped (every read re-checks it)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read(self, begin: int = 0, end: int | None = None) -> np.ndarray:
        """Flat elements ``[begin, end)`` (default: all) as a new array [end - begin]."""
        end = self.size if end is None else min(end, self.size)
        n, width = max(end - begin, 0), self.dtype.itemsize
        with open(self.path, "rb") as fh:
            if _stamp(os.fstat(fh.fileno())) != self.stamp:
                raise MessageError(f"{self.path}: changed on disk after it was checked")
            fh.seek(self.start + begin * width)
            raw = fh.read(n * width)
        if len(raw) != n * width:
            raise MessageError(f"{self.path}: shorter than its header says")
        return np.frombuffer(raw, self.dtype).copy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.read().reshape(self.shape)
        return a if dtype is None else a.astype(dtype)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def all_finite(self) -> bool:
        """Whether every value is finite (read slice by slice); True for non-float dtypes. Computed
        once: the file cannot change unnoticed (every later read refuses a changed stamp)."""
        if self.dtype.kind not in "fc":
            return True
        if self._finite is None:
            step = max(1, CHECK_CHUNK_BYTES // self.dtype.itemsize)
            self._finite = all(bool(np.isfinite(self.read(b, b + step)).all()) for b in range(0, self.size, step))
        return self._finite

    def __repr__(self) -> str:
        return f"DiskArray({self.path.name}, {self.dtype}{list(self.shape)})"


def lazy_arrays(path: str | Path, prefix: str) -> dict[str, np.ndarray | DiskArray]:
    """The arrays of the safetensors file ``path`` (header checked first): names starting with
    ``prefix`` as :class:`DiskArray`, the others loaded. :class:`MessageError` naming the file
    when it is malformed, FileNotFoundError when it is missing."""
    path = Path(path)
    stamp = _stamp(os.stat(path))
    start, header = safetensors_layout(path)
    out: dict[str, np.ndarray | DiskArray] = {}
    for name, entry in header.items():
        lazy = DiskArray(path, start + entry["data_offsets"][0], tuple(entry["shape"]),
                         NUMPY_DTYPES[entry["dtype"]], stamp)
        out[name] = lazy if name.startswith(prefix) else np.asarray(lazy)
    return out


def is_finite(a) -> bool:
    """Whether every value of an array (in memory or :class:`DiskArray`) is finite."""
    if isinstance(a, DiskArray):
        return a.all_finite()
    return a.dtype.kind != "f" or bool(np.isfinite(a).all())
