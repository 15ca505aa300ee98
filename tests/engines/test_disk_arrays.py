"""Upload tensors read from disk on demand: the same values as a full load, the same aggregate
bit for bit, refusal of a file that changed after it was checked, and the round's validation on
lazily read arrays."""
from __future__ import annotations

import os

import numpy as np
import pytest

from fedmm.engines.disk_arrays import DiskArray, lazy_arrays
from fedmm.engines.wire import check_arrays, load_message, save_message
from fedmm.federated import server
from fedmm.federated.messages import Message, MessageError
from fedmm.io import load_arrays, save_arrays


def _arrays(rng) -> dict[str, np.ndarray]:
    return {"shared/image_encoder.w": rng.standard_normal((37, 5)).astype(np.float32),
            "shared/image_encoder.b": rng.standard_normal(11).astype(np.float32),
            "shared/fusion.w": rng.standard_normal((3, 4)).astype(np.float32),
            "summary/image_counts": rng.random(4).astype(np.float32),
            "public/index": np.arange(6, dtype=np.int64)}


def test_lazy_arrays_read_what_a_full_load_reads(tmp_path):
    path = tmp_path / "u.safetensors"
    ref = _arrays(np.random.default_rng(0))
    save_arrays(path, ref)
    lazy = lazy_arrays(path, "shared/")
    assert set(lazy) == set(ref)
    for name, a in ref.items():
        got = lazy[name]
        assert isinstance(got, DiskArray) == name.startswith("shared/")
        assert got.shape == a.shape and got.dtype == a.dtype
        np.testing.assert_array_equal(np.asarray(got), a)
    w = lazy["shared/image_encoder.w"]
    np.testing.assert_array_equal(w.read(7, 30), ref["shared/image_encoder.w"].ravel()[7:30])
    assert w.read(180, 999).size == 5 and w.nbytes == ref["shared/image_encoder.w"].nbytes


def test_a_file_changed_after_it_was_checked_is_refused(tmp_path):
    path = tmp_path / "u.safetensors"
    save_arrays(path, _arrays(np.random.default_rng(1)))
    lazy = lazy_arrays(path, "shared/")
    save_arrays(path, _arrays(np.random.default_rng(2)))   # replaced: another inode / mtime
    with pytest.raises(MessageError, match="changed on disk"):
        lazy["shared/image_encoder.w"].read()


def test_load_message_lazy_checks_values_and_shapes(tmp_path):
    arrays = _arrays(np.random.default_rng(3))
    save_message(Message("upload", arrays, {"client": "c"}), tmp_path / "up")
    msg = load_message(tmp_path / "up", "upload", lazy="shared/")
    spec = {k: (None,) * v.ndim for k, v in arrays.items()}
    check_arrays(msg.arrays, spec, "x")
    with pytest.raises(MessageError, match="shape"):
        check_arrays(msg.arrays, {**spec, "shared/image_encoder.w": (36, 5)}, "x")
    bad = dict(arrays)
    bad["shared/image_encoder.w"] = bad["shared/image_encoder.w"].copy()
    bad["shared/image_encoder.w"][20, 3] = np.nan
    save_message(Message("upload", bad, {"client": "c"}), tmp_path / "bad")
    with pytest.raises(MessageError, match="NaN"):
        load_message(tmp_path / "bad", "upload", lazy="shared/")


def _whole_group_update(shared, uploads, weights, method, trim, n_byzantine):
    """Each group's tensors concatenated for every client and combined in one call (the layout
    before aggregation went slice by slice)."""
    from fedmm.federated.params import param_group
    from fedmm.ops import aggregate, krum_scores

    new = dict(shared)
    for group in sorted({param_group(n) for n in shared}):
        names = [n for n in shared if param_group(n) == group]
        idx = [i for i, u in enumerate(uploads) if all(f"shared/{n}" in u.arrays for n in names)]
        vectors = [np.concatenate([uploads[i].arrays[f"shared/{n}"].ravel() for n in names]) for i in idx]
        w, rule = weights[idx], method
        if rule == "krum":
            chosen = np.argsort(krum_scores(vectors, n_byzantine))[: max(1, len(vectors) - n_byzantine)]
            vectors, w, rule = [vectors[j] for j in chosen], w[chosen], "mean"
        combined = aggregate(vectors, weights=w, method=rule, trim=trim)
        bounds = np.cumsum([0] + [shared[n].size for n in names])
        for n, lo, hi in zip(names, bounds[:-1], bounds[1:]):
            new[n] = combined[lo:hi].reshape(shared[n].shape)
    return new


@pytest.mark.parametrize("method", ["mean", "median", "trimmed_mean", "krum"])
def test_global_update_from_disk_is_bit_identical_to_memory(tmp_path, monkeypatch, method):
    rng = np.random.default_rng(4)
    shared = {k[len("shared/"):]: v for k, v in _arrays(rng).items() if k.startswith("shared/")}
    uploads_mem, uploads_disk = [], []
    for i in range(9):
        arrays = {f"shared/{k}": (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in shared.items()}
        if i == 4:
            arrays.pop("shared/fusion.w")   # a client that did not train the fusion group
        uploads_mem.append(Message("upload", arrays, {"client": f"c{i}", "n_train": 10 + i}))
        save_message(uploads_mem[-1], tmp_path / f"c{i}")
        uploads_disk.append(load_message(tmp_path / f"c{i}", "upload", lazy="shared/"))
    weights = rng.random(9) + 0.1
    kw = dict(method=method, trim=0.2, n_byzantine=2, weights=weights)
    ref = _whole_group_update(shared, uploads_mem, weights, method, 0.2, 2)
    in_memory = server.global_update(shared, uploads_mem, **kw)
    assert all(in_memory[k].tobytes() == ref[k].tobytes() for k in ref)
    monkeypatch.setattr(server, "AGG_CHUNK_BYTES", 4 * 9 * 7)   # slices of 7 values: many per tensor
    got = server.global_update(shared, uploads_disk, **kw)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == np.float32 and got[k].shape == shared[k].shape
        assert got[k].tobytes() == ref[k].tobytes(), k
    assert not np.array_equal(got["image_encoder.w"], shared["image_encoder.w"])


def test_aggregation_reads_in_slices_not_whole_uploads(tmp_path, monkeypatch):
    """With a small slice budget no read covers a whole tensor of every client at once."""
    shared = {"classifier.w": np.zeros(1000, np.float32)}
    for i in range(5):
        save_message(Message("upload", {"shared/classifier.w": np.full(1000, i, np.float32)}, {}), tmp_path / f"c{i}")
    uploads = [load_message(tmp_path / f"c{i}", "upload", lazy="shared/") for i in range(5)]
    sizes = []
    original = DiskArray.read

    def spy(self, begin=0, end=None):
        out = original(self, begin, end)
        sizes.append(out.size)
        return out

    monkeypatch.setattr(DiskArray, "read", spy)
    monkeypatch.setattr(server, "AGG_CHUNK_BYTES", 4 * 5 * 100)
    out = server.global_update(shared, uploads, weights=np.ones(5))
    np.testing.assert_allclose(out["classifier.w"], 2.0)
    assert sizes and max(sizes) == 100 and len(sizes) == 50
    assert os.path.exists(tmp_path / "c0.safetensors") and load_arrays(tmp_path / "c0.safetensors")


def test_in_process_uploads_stay_on_disk_until_the_next_exchange(tmp_path, monkeypatch):
    """The server holds no client's federated tensors in memory: they are read from the round's
    upload files, which live until the next exchange (or the end of the run)."""
    from types import SimpleNamespace

    from fedmm.engines import transport as tr
    from fedmm.engines.loop import NullReporter

    def fake_job(data, broadcast, cfg, strategy, store, vocab_size, device, stem):
        r = int(broadcast.meta["round"])
        save_message(Message("upload", {"shared/fusion.w": np.full(4, r, np.float32)},
                             {"client": data.name, "round": r}), stem)
        return stem

    monkeypatch.setattr(tr, "client_job", fake_job)
    fed = SimpleNamespace(clients=[SimpleNamespace(name=f"client_{i}") for i in range(3)], vocab_size=10)
    t = tr.InProcessTransport(fed, None, None, tmp_path, "cpu", NullReporter())
    replies, problems = t.exchange(Message("broadcast", {}, {"round": 0}), 0)
    assert not problems and [r.source for r in replies] == ["client_0", "client_1", "client_2"]
    assert all(isinstance(r.message.arrays["shared/fusion.w"], DiskArray) for r in replies)
    assert (tmp_path / "exchange" / "round_0000").is_dir()
    replies, _ = t.exchange(Message("broadcast", {}, {"round": 1}), 1)
    assert not (tmp_path / "exchange" / "round_0000").exists()
    np.testing.assert_array_equal(np.asarray(replies[0].message.arrays["shared/fusion.w"]), np.ones(4))
    t.finish(None)
    assert not (tmp_path / "exchange").exists()


def test_finiteness_is_read_once_and_a_later_change_still_refused(tmp_path, monkeypatch):
    """A message checked by load_message and again by check_upload reads its data once for the
    check; replacing the file afterwards is still caught on the next read."""
    path = tmp_path / "u.safetensors"
    save_arrays(path, _arrays(np.random.default_rng(5)))
    w = lazy_arrays(path, "shared/")["shared/image_encoder.w"]
    reads = []
    original = DiskArray.read
    monkeypatch.setattr(DiskArray, "read", lambda self, b=0, e=None: reads.append(b) or original(self, b, e))
    assert w.all_finite() and w.all_finite()
    assert len(reads) == 1
    save_arrays(path, _arrays(np.random.default_rng(6)))
    with pytest.raises(MessageError, match="changed on disk"):
        w.read()
