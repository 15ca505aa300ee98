"""Inputs of the trust-boundary fuzz tests (test_fuzz_boundary.py): valid uploads and broadcasts for a
small spec, and hypothesis strategies that make each of them (or a safetensors file, or a JSON index)
hostile in one way. Every strategy returns the input and what it changed.
"""
import json
import struct

import numpy as np
from hypothesis import strategies as st
from safetensors.numpy import save

from fedmm.engines.wire import broadcast_spec, upload_spec
from fedmm.federated.messages import Message
from fedmm.federated.train import VIEWS

D, C, N_LOGITS, N_PUBLIC = 4, 3, 5, 8
SHARED = {"classifier.net.0.weight": (C, D), "classifier.net.0.bias": (C,)}
SPEC, BSPEC = upload_spec(SHARED, D, C), broadcast_spec(SHARED, D, C)
CLIENTS = ["client_0", "client_1", "client_2"]
WEIRD = st.sampled_from([None, True, -1, 0, 1.5, 1e308, -1e308, float("nan"), float("inf"), 10**400, 2**53,
                         "", "x" * 500, [], [1, 2], {}, {"a": None}])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8)
LITERALS = ["1" + "0" * 400, "-" + "9" * 5000, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e-400"]


def upload(name="client_0", seed=0, spec=SPEC, n_logits=N_LOGITS, **meta) -> Message:
    """A valid upload for ``spec`` (4 summary rows per modality, ``n_logits`` public rows)."""
    rng, rows = np.random.default_rng(seed), {"summary": 4, "public": n_logits}
    arrays = {k: rng.normal(size=[rows[k.split("/")[0]] if s is None else s for s in shape]).astype(np.float32)
              for k, shape in spec.items()}
    arrays.update({k: np.abs(a) + 1 for k, a in arrays.items() if k.endswith(("_counts", "_hist"))})
    return Message("upload", arrays, {"client": name, "round": 0, "n_train": 10 + seed, "val_score": 0.5,
                                      "val_scores": {"full": 0.5}, "n_val": 4, "val_classes": 2, "train_loss": 1.0,
                                      "trained_groups": ["classifier"], "modality": "multimodal", **meta})


def broadcast(drop: str = "", **arrays) -> Message:
    """A valid broadcast for BSPEC (2 image / 3 text centers, 2 pairs, 4 public rows); ``a__b=`` replaces a/b."""
    rng = np.random.default_rng(1)
    f = lambda *s: np.abs(rng.normal(size=s)).astype(np.float32)  # noqa: E731
    a = {**{f"shared/{k}": f(*s) for k, s in SHARED.items()}, **{f"teacher/{v}_probs": f(2, C) for v in VIEWS},
         "gv/img_centers": f(2, D), "gv/txt_centers": f(3, D), "gv/pair_img": np.array([0, 1]),
         "gv/pair_txt": np.array([2, 0]), "gv/hist_img": f(2, C), "gv/hist_txt": f(3, C),
         "gv/prototypes": f(2, 2 * D), "public/index": np.array([0, 3, 5, 7]), "teacher/index": np.array([1, 2]),
         "repkd/index": np.array([1, 2]), "repkd/image": f(2, D), "repkd/text": f(2, D)}
    a = {k: v for k, v in {**a, **{k.replace("__", "/"): v for k, v in arrays.items()}}.items() if k != drop}
    return Message("broadcast", a, {"round": 3, "students": ["client_1"], "strategy": "fedmm"})


@st.composite
def hostile_arrays(draw, msg: Message) -> str:
    """One hostile change to ``msg.arrays`` (in place); returns the name of the array it touched."""
    key = draw(st.sampled_from(sorted(msg.arrays)))
    how, a = draw(st.sampled_from(["nan", "dtype", "shape", "extra", "missing"])), msg.arrays[key]
    if how == "nan" and a.size and a.dtype.kind == "f":
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "dtype":
        a = a.astype(draw(st.sampled_from([np.float64, np.int32, np.float16, np.bool_, np.int64, np.float32])))
    elif how == "shape":
        a = draw(st.sampled_from([a[:-1], a[None], np.concatenate([a, a[:1]]), a.reshape(-1), a.T.copy()]))
    elif how == "extra":
        key = draw(st.sampled_from(["extra/array", "shared/unknown", "summary/audio_counts", key + " "]))
    elif how == "missing":
        del msg.arrays[key]
        return key
    msg.arrays[key] = np.ascontiguousarray(a)
    return key


def st_file(header, length=None, data=bytes(8)) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


@st.composite
def hostile_safetensors(draw) -> tuple[bytes, str]:
    """A genuine safetensors file, then at most one corruption; returns (bytes, corruption)."""
    dtypes = st.sampled_from([np.float32, np.int64, np.float16, np.bool_, np.uint8])
    arrays = {f"t{i}": (np.arange(draw(st.integers(0, 4)) * 2) % 3).astype(draw(dtypes)).reshape(-1, 2)
              for i in range(draw(st.integers(1, 3)))}
    raw = save(arrays)
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    how = draw(st.sampled_from(["none", "length", "dtype", "shape", "offsets", "cut", "junk", "json", "meta",
                                "flip"]))
    entry, length = header[draw(st.sampled_from(sorted(arrays)))], None
    if how == "dtype":
        entry["dtype"] = draw(st.sampled_from(["F16", "BOOL", "I8", "F64", "BF16", "F8_E4M3", "XX", "", 5, None]))
    elif how == "shape":
        entry["shape"] = draw(st.sampled_from([[2**40, 2**40], [2**62] * 3, [-1], [1.5], "2", [1] * 65, [0, 2**70],
                                               [10**4000] * 2]))
    elif how == "offsets":
        entry["data_offsets"] = draw(st.sampled_from([[0, 2**82], [0, 2**63], [8, 0], [0], None, [-8, 0],
                                                      [0, len(data) + 8], [1, 9]]))
    elif how in ("json", "meta"):
        header = draw(JSON) if how == "json" else {**header, "__metadata__": draw(WEIRD)}
    elif how == "length":
        length = draw(st.sampled_from([2**60, 2**64 - 1, 0, 7, len(json.dumps(header)) + 1]))
    raw = st_file(header, length, data)
    if how == "cut":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":   # one bit of the length, the header or the data
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ (1 << draw(st.integers(0, 7)))]) + raw[at + 1:]
    return raw + (draw(st.binary(min_size=1, max_size=16)) if how == "junk" else b""), how


@st.composite
def hostile_index(draw) -> tuple[str, bool]:
    """The JSON index of a valid upload with at most one hostile field; returns (text, untouched)."""
    msg = upload()
    header = {"kind": "upload", "meta": dict(msg.meta),
              "arrays": {k: [list(a.shape), str(a.dtype)] for k, a in msg.arrays.items()}}
    where = draw(st.sampled_from(["none", "top", "kind", "meta", "arrays", "entry", "field", "drop", "literal"]))
    value = draw(WEIRD | JSON)
    if where == "top":
        header = value
    elif where in ("kind", "meta", "arrays"):
        header[where] = value
    elif where in ("entry", "field"):
        part = header["arrays" if where == "entry" else "meta"]
        part[draw(st.sampled_from(sorted(part) + ["extra"]))] = value
    elif where == "drop":
        del header[draw(st.sampled_from(["kind", "meta", "arrays"]))]
    text = json.dumps(header)
    if where == "literal":
        key = draw(st.sampled_from(sorted(msg.meta)))
        text = text.replace(f'"{key}": {json.dumps(msg.meta[key])}', f'"{key}": {draw(st.sampled_from(LITERALS))}')
    return text, where == "none"


@st.composite
def hostile_upload(draw) -> tuple[Message, str | None]:
    """A valid upload with at most one hostile change; returns (message, meta key or array touched)."""
    msg = upload(draw(st.sampled_from(CLIENTS)))
    how = draw(st.sampled_from(["none", "meta", "meta", "drop", "arrays", "arrays", "client", "round"]))
    key = draw(st.sampled_from(sorted(msg.meta))) if how in ("meta", "drop") else None
    if how == "meta":
        msg.meta[key] = draw(WEIRD | JSON)
    elif how == "drop":
        del msg.meta[key]
    elif how == "client":
        key, msg.meta["client"] = "client", draw(st.sampled_from(["client_9", "", "CLIENT_0", "client_0 ", "../c"]))
    elif how == "round":
        key, msg.meta["round"] = "round", draw(st.sampled_from([1, -1, 10**400, 0.0, False, "0", None, [0]]))
    elif how == "arrays":
        key = draw(hostile_arrays(msg))
    return msg, key


@st.composite
def hostile_broadcast(draw) -> tuple[Message, bool]:
    """A valid broadcast with at most one hostile change; returns (message, untouched)."""
    msg, how = broadcast(), draw(st.sampled_from(["none", "meta", "arrays", "index"]))
    if how == "meta":
        msg.meta[draw(st.sampled_from(["round", "students"]))] = draw(WEIRD | JSON)
    elif how == "arrays":
        draw(hostile_arrays(msg))
    elif how == "index":
        key = draw(st.sampled_from(["gv/pair_img", "gv/pair_txt", "public/index", "teacher/index"]))
        msg.arrays[key] = msg.arrays[key] + draw(st.sampled_from([-10, 3, N_PUBLIC, 2**40]))
    return msg, how == "none"
