"""Property-based fuzzing (hypothesis) of the trust boundary: the readers (``fedmm.io.load_arrays``,
``read_json``, ``load_message``, and ``lazy_arrays`` / ``load_message(lazy=...)``, which the server
uses: federated tensors read from the file on demand) and the receivers' validators (``check_upload``, ``check_broadcast``,
``order_uploads``) fed random bytes; safetensors files with a corrupted header length (2**60), wrong
or unknown dtypes, huge shapes ([2**40, 2**40]) against the file size, truncation, junk; JSON with
wrong types, 10**400 / 1e400 / NaN / Infinity, missing keys, a wrong kind; uploads from unknown or
duplicate clients, for wrong rounds, with NaN/Inf, float64/int32/float16/bool/int64 arrays, wrong
shapes, extra or missing arrays. Property: valid input is accepted (an accepted upload goes through
the server's weighting and aggregation, an accepted broadcast through a client's indexing), anything
else raises ``MessageError`` naming the file or field: no other exception, no hang (deadline), no
large allocation (tracemalloc peak). Last, a rejected upload leaves the published state byte-identical.
Each CI run generates 2,100 uploads (files, indexes and whole uploads; ``FILES``, ``INDEXES``,
``UPLOADS``) besides the broadcasts, JSON texts and client lists.
"""
import json
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fuzz_cases import (BSPEC, CLIENTS, JSON, LITERALS, N_LOGITS, N_PUBLIC, SHARED, SPEC, C, broadcast,
                        hostile_broadcast, hostile_index, hostile_safetensors, hostile_upload, st_file, upload)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedmm.engines.wire import check_broadcast, check_upload, order_uploads
from fedmm.federated.mechanisms.contribution import client_weights
from fedmm.engines.wire import MAX_INDEX_BYTES
from fedmm.federated.messages import Message, MessageError
from fedmm.federated.server import global_update
from fedmm.io import load_arrays, read_json
from fedmm.models.surrogate import GlobalVectors
from fedmm.engines.disk_arrays import lazy_arrays
from fedmm.engines.wire import load_message, save_message

HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]   # files are rewritten every example
FUZZ = settings(max_examples=150, deadline=500, database=None, suppress_health_check=HEALTH)
# the generated uploads: files 400 + hostile indexes 500 + uploads 1200 = 2,100 per CI run
FILES, INDEXES, UPLOADS = (settings(FUZZ, max_examples=n) for n in (400, 500, 1200))


def check_named(exc: MessageError, *names: str) -> None:
    assert any(n in str(exc) for n in names), (str(exc), names)


@FILES
@given(st.binary(max_size=256).map(lambda b: (b, "random")) | hostile_safetensors())
@example((b"", "random"))
@example((st_file({"a": {"dtype": "I8", "shape": [2], "data_offsets": [0, 2]}}, 2**60), "huge header length"))
@example((st_file({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}), "huge shape"))
@example((st_file({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 2**82]}}), "huge"))
@example((st_file({"a": {"dtype": "I8", "shape": [2**33], "data_offsets": [0, 2**33]}}), "beyond the file"))
def test_load_arrays_accepts_genuine_and_refuses_malformed_files_cheaply(tmp_path, case):
    path = tmp_path / "x.safetensors"
    path.write_bytes(case[0])
    tracemalloc.start()
    out = None
    try:
        out = load_arrays(path)
        assert isinstance(out, dict) and all(isinstance(a, np.ndarray) for a in out.values())
    except MessageError as exc:
        assert case[1] != "none", exc
        check_named(exc, str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < (64 << 20 if case[1] in ("none", "random") else 1 << 20), peak
    try:   # the server's reader (tensors read from the file on demand) agrees with the full load
        lazy = lazy_arrays(path, "")
    except MessageError as exc:
        return check_named(exc, str(path))
    if out is not None:
        assert set(lazy) == set(out) and all(np.array_equal(np.asarray(lazy[k]), out[k], equal_nan=out[k].dtype.kind in "fc")
                                             for k in out)


@FUZZ
@given(st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()) | st.sampled_from(LITERALS).map(str.encode))
def test_read_json_only_raises_message_error(tmp_path, raw):
    (tmp_path / "x.json").write_bytes(raw)
    try:
        read_json(tmp_path / "x.json", MAX_INDEX_BYTES)
    except MessageError as exc:
        check_named(exc, str(tmp_path / "x.json"))
    (tmp_path / "big.json").write_bytes(b" " * (MAX_INDEX_BYTES + 1))
    with pytest.raises(MessageError, match="big.json: larger than"):
        load_message(tmp_path / "big")


def accept_or_name(msg: Message, untouched: bool, *names: str) -> None:
    """``check_upload`` accepts (and the server's weighting + aggregation stay finite) or names the problem."""
    try:
        name = check_upload(msg, SPEC, 0, CLIENTS, N_LOGITS)
    except MessageError as exc:
        assert not untouched, exc
        return check_named(exc, *names)
    assert name == msg.meta["client"] and all(a.dtype == np.float32 for a in msg.arrays.values())
    weights = client_weights([msg, upload("client_1")], "performance", 0.1, C)
    new = global_update({k: np.zeros(s, np.float32) for k, s in SHARED.items()}, [msg, upload("client_1")],
                        weights=weights)
    assert np.isfinite(weights).all() and all(np.isfinite(v).all() for v in new.values())


@INDEXES
@given(hostile_index(), st.booleans())
def test_message_load_and_check_upload_on_hostile_index(tmp_path, case, lazy):
    save_message(upload(), tmp_path / "up")
    (tmp_path / "up.json").write_text(case[0])
    try:
        msg = load_message(tmp_path / "up", "upload", lazy="shared/" if lazy else None)
    except MessageError as exc:
        assert not case[1], exc
        return check_named(exc, str(tmp_path / "up"))
    accept_or_name(msg, case[1], "upload of")


@UPLOADS
@given(hostile_upload(), st.sampled_from(["memory", "disk", "disk, read on demand"]))
@example((upload(val_score=10**400), "val_score"), "memory")
@example((upload(train_loss=-10**400), "train_loss"), "disk")
@example((upload(n_train=10**400), "n_train"), "memory")
@example((upload(n_val=10**400), "n_val"), "memory")
@example((Message("upload", {**upload().arrays, "shared/classifier.net.0.bias": np.ones(C, np.int64)},
                  upload().meta), "shared/classifier.net.0.bias"), "disk, read on demand")
def test_check_upload_accepts_valid_or_names_the_problem(tmp_path, case, route):
    msg, key = case
    if route != "memory":   # through the files: load_message's checks first (NaN, dtype tags, index)
        save_message(msg, tmp_path / "up")
        try:
            msg = load_message(tmp_path / "up", "upload", lazy="shared/" if route.endswith("demand") else None)
        except MessageError as exc:
            return check_named(exc, str(tmp_path / "up"))
    modality = [key.split("/")[1].split("_")[0]] if key and key.startswith("summary/") else []
    accept_or_name(msg, key is None, *([key] if key else []), *modality)


@FUZZ
@given(hostile_broadcast())
@example((broadcast(drop="gv/img_centers"), False))
@example((broadcast(gv__pair_img=np.array([0.0, 1.0], np.float32)), False))
def test_check_broadcast_accepts_valid_or_names_the_problem(case):
    msg, untouched = case
    try:
        assert check_broadcast(msg, BSPEC, N_PUBLIC) == msg.meta["round"]
    except MessageError as exc:
        assert not untouched and str(exc).startswith("global state"), exc
        return
    gv = GlobalVectors.from_arrays(msg.arrays)   # what a client does with an accepted broadcast
    if gv is not None:
        assert len(gv.img_centers[gv.pair_img]) == len(gv.txt_centers[gv.pair_txt]) == len(gv.prototypes)
    for key in ("public/index", "teacher/index", "repkd/index"):
        np.zeros(N_PUBLIC)[msg.arrays.get(key, np.zeros(0, np.int64))]


@FUZZ
@given(st.lists(st.sampled_from(CLIENTS + ["client_9", None, 5, ""]), max_size=8))
def test_order_uploads_drops_duplicates_and_unknown_clients(names):
    out, problems = order_uploads([Message("upload", {}, {"client": n, "seq": i}) for i, n in enumerate(names)],
                                  CLIENTS)
    assert [u.meta["client"] for u in out] == [c for c in CLIENTS if c in names]
    assert all(u.meta["seq"] == names.index(u.meta["client"]) for u in out)   # the first one of a client wins
    assert len(out) + len(problems) == len(names)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Receive + aggregate one round with the smoke config's server (no data, no training)."""
    from fedmm.config import load_config
    from fedmm.engines.loop import ServerContext
    from fedmm.engines.transport import FederationInfo

    cfg = load_config(None, ["threads=1", "device=cpu", "data.n_clients=3"], "smoke")
    info, base = FederationInfo(["a", "b", "c"], False, 200, 10, CLIENTS), tmp_path_factory.mktemp("fuzz_server")
    ctx = ServerContext(cfg, info, base / "init")
    n_logits = len(ctx.start(resume=False)[0].public_index)

    def run_round(stems: list[Path]) -> dict[str, bytes]:
        """Load, validate, order the uploads at ``stems``; aggregate; return every written file's bytes."""
        accepted = []
        for stem in stems:
            try:
                msg = load_message(stem, "upload")
                check_upload(msg, ctx.spec, 0, CLIENTS, n_logits)
            except MessageError:
                continue
            accepted.append(msg)
        run = ServerContext(cfg, info, Path(tempfile.mkdtemp(dir=base)))
        run.finish_round(run.start(resume=False)[0], order_uploads(accepted, CLIENTS)[0], 0.0)
        return {p.name: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}

    def make(name: str, seed: int) -> Message:
        return upload(name, seed, ctx.spec, n_logits)

    good = [base / "good" / name for name in CLIENTS[:2]]
    for k, stem in enumerate(good):
        save_message(make(stem.name, k), stem)
    return make, run_round, good, run_round(good), base


@settings(max_examples=5, deadline=None, database=None, suppress_health_check=HEALTH)
@given(st.data())
def test_rejected_upload_leaves_global_state_byte_identical(server, data):
    make, run_round, good, reference, base = server
    how, bad = data.draw(st.sampled_from(["meta", "arrays", "duplicate", "cut"])), make("client_2", 7)
    if how == "meta":
        bad.meta.update([data.draw(st.sampled_from([("client", "client_9"), ("round", 1), ("n_train", 10**400),
                                                    ("val_score", float("nan")), ("modality", None)]))])
    elif how == "arrays":
        key = data.draw(st.sampled_from(sorted(bad.arrays)))
        bad.arrays[key] = data.draw(st.sampled_from([bad.arrays[key].astype(np.float64), bad.arrays[key][None],
                                                     np.full_like(bad.arrays[key], np.nan)]))
    elif how == "duplicate":   # a second upload claiming client_0, arriving after the genuine one
        bad.meta["client"] = "client_0"
    stem = base / "bad" / f"{how}_{data.draw(st.integers(0, 10**6))}"
    save_message(bad, stem)
    if how == "cut":
        raw = stem.with_suffix(".safetensors").read_bytes()
        stem.with_suffix(".safetensors").write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    stems = list(good)
    stems.insert(data.draw(st.integers(2 if how == "duplicate" else 0, 2)), stem)
    assert run_round(stems) == reference
