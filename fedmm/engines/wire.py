"""Messages on the wire: how they are written, read and checked, in one place.

A :class:`~fedmm.federated.messages.Message` is a plain dataclass. On disk it is
``<stem>.safetensors`` (arrays) + ``<stem>.json`` (kind, metadata, name/shape/dtype of every
array): :func:`save_message` writes it, :func:`load_message` reads it back and checks the two
agree and that every array is finite. :func:`check_arrays` validates names, shapes and dtypes
against what the receiver expects; :func:`check_upload` and :func:`check_broadcast` are the
whole contract each side checks (metadata, the specs of :func:`upload_spec` /
:func:`broadcast_spec`, consistency between arrays); :func:`order_uploads` puts accepted
uploads in federation order; :func:`publish_state` / :func:`read_published` are a global state
published in a shared folder. Every reader treats what it gets as a claim.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fedmm.data.modality import CLIENT_TYPES
from fedmm.engines.disk_arrays import DiskArray, is_finite, lazy_arrays
from fedmm.federated.messages import Message
from fedmm.federated.train import VIEWS as MODALITY_VIEWS
from fedmm.io import MessageError, load_arrays, read_json, save_arrays, short_repr, write_json

MAX_INDEX_BYTES = 1 << 20   # a message's JSON index (kind, meta, array list) larger than this is refused
MODALITIES = (*CLIENT_TYPES, "none")   # what an upload may claim; none: a site with no usable rows
MAX_COUNT = 2**53                 # counts claimed in an upload's meta stay exact as floats
INDEX_KEYS = ("gv/pair_img", "gv/pair_txt", "teacher/index", "public/index", "repkd/index")


def _index_entry_ok(entry) -> bool:
    """``[shape, dtype]`` with a list of non-negative integer sizes and a dtype name."""
    return (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list) and isinstance(entry[1], str)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry[0]))


def save_message(msg: Message, stem: str | Path) -> None:
    """Write arrays first, then the JSON index (its presence marks a complete message)."""
    stem = Path(stem)
    save_arrays(stem.with_suffix(".safetensors"), msg.arrays)
    index = {name: [list(a.shape), str(a.dtype)] for name, a in msg.arrays.items()}
    write_json(stem.with_suffix(".json"), {"kind": msg.kind, "meta": msg.meta, "arrays": index})


def load_message(stem: str | Path, kind: str | None = None, lazy: str | None = None) -> Message:
    """Read ``<stem>.json`` + ``<stem>.safetensors`` and check they agree (names, shapes, dtypes,
    finite values); :class:`MessageError` naming the file and the problem otherwise. ``lazy``: arrays
    whose name starts with it stay on disk (:class:`~fedmm.engines.disk_arrays.DiskArray`, read in
    slices when used; the file must stay in place while the message is used)."""
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
        if not (apath.exists() or index):
            arrays = {}
        else:
            arrays = load_arrays(apath) if lazy is None else lazy_arrays(apath, lazy)
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
    msg = Message(header["kind"], arrays, header["meta"])
    check_finite(msg, str(apath))
    return msg


def publish_state(shared: Path, broadcast: Message) -> None:
    """Publish a global state: its own files first, then ``latest.json`` points to it (older ones pruned)."""
    r = int(broadcast.meta["round"])
    save_message(broadcast, shared / f"global_round_{r:04d}")
    write_json(shared / "latest.json", {"round": r})
    for old in shared.glob("global_round_*.*"):
        stem_round = old.name.split(".")[0].rsplit("_", 1)[-1]
        if stem_round.isdigit() and int(stem_round) < r - 1:
            old.unlink(missing_ok=True)


def read_published(shared: Path) -> Message:
    """The latest published global state (validated as a message: index, shapes, finite values)."""
    try:
        r = int(read_json(shared / "latest.json")["round"])
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{shared}: no published global state (run 'fedmm server init')") from exc
    return load_message(shared / f"global_round_{r:04d}", "broadcast")


def check_finite(msg: Message, where: str = "message") -> None:
    """Raise :class:`MessageError` when a float array holds NaN/Inf."""
    for name, a in msg.arrays.items():
        if not is_finite(a):
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
        if not isinstance(a, (np.ndarray, DiskArray)):
            raise MessageError(f"{where}: {name} is a {type(a).__name__}, not an array")
        shape = expected[name]
        if len(shape) != a.ndim or any(s is not None and s != n for s, n in zip(shape, a.shape)):
            raise MessageError(f"{where}: {name} has shape {list(a.shape)}, expected {list(shape)}")
        if a.dtype not in (np.float32, np.int64):
            raise MessageError(f"{where}: {name} has dtype {a.dtype}, expected float32 or int64")
        if not is_finite(a):
            raise MessageError(f"{where}: {name} has NaN/Inf values")


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
