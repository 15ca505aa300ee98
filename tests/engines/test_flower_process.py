"""The pieces behind Flower with long-lived ClientApp processes: packed records (exact, and refused
when the index lies), the client data cache (encodes once, notices changes, one client at a time),
the SuperNode's capped idle poll, and a ClientApp process that follows its SuperNode."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transport_cases import session_base, small_config

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict  # noqa: E402

from fedmm.deploy.certs import make_certs  # noqa: E402
from fedmm.deploy.nodes import HospitalNode  # noqa: E402
from fedmm.deploy.pids import process_alive, start_time  # noqa: E402
from fedmm.deploy.processes import ManagedProcess, flower_env, free_port, superlink_argv, wait_for_port  # noqa: E402
from fedmm.engines.clientside import ClientCache, load_client_data, read_config  # noqa: E402
from fedmm.engines.files import init_server, link_simulation_root, shared_dir  # noqa: E402
from fedmm.engines.flower.records import ARRAYS, META, from_records, pack_arrays, to_records  # noqa: E402
from fedmm.engines.flower.worker import READY_LINE  # noqa: E402
from fedmm.engines.prepare import prepare_federation  # noqa: E402
from fedmm.engines.transport import FederationInfo  # noqa: E402
from fedmm.federated.messages import Message, MessageError  # noqa: E402


def _message() -> Message:
    rng = np.random.default_rng(0)
    return Message("upload", {"shared/w": rng.standard_normal((3, 5)).astype(np.float32),
                              "public/index": np.arange(7, dtype=np.int64), "empty": np.zeros((0, 4), np.float32),
                              "scalar": np.array(2.5, np.float64)}, {"client": "client_0", "n_train": 3})


def test_packed_records_round_trip_exactly_in_one_array():
    msg = _message()
    content = to_records(msg, {"config": "x = 1"})
    assert list(content.array_records[ARRAYS].keys()) == ["packed"]        # one Array, not one per tensor
    back, extra = from_records(content, "upload")
    assert extra == {"config": "x = 1"} and back.meta == msg.meta
    assert list(back.arrays) == list(msg.arrays)
    for k, a in msg.arrays.items():
        assert back.arrays[k].dtype == a.dtype and back.arrays[k].shape == a.shape
        assert back.arrays[k].tobytes() == a.tobytes()
        assert back.arrays[k].flags.writeable and back.arrays[k].flags.owndata   # own copies


@pytest.mark.parametrize("lie", ["offset", "past_end", "leftover", "dtype", "twice", "shape"])
def test_packed_records_refuse_an_index_that_does_not_describe_the_buffer(lie):
    buf, index = pack_arrays(_message().arrays)
    if lie == "offset":
        index[1][3] += 4
    elif lie == "past_end":
        index[-1][2] = [1000]
    elif lie == "leftover":
        buf = np.concatenate([buf, np.zeros(8, np.uint8)])
    elif lie == "dtype":
        index[0][1] = "|O"
    elif lie == "twice":
        index[1][0] = index[0][0]
    else:
        index[0][2] = [3, -5]
    import json

    content = RecordDict({ARRAYS: ArrayRecord({"packed": Array(buf)}),
                          META: ConfigRecord({"kind": "upload", "meta": "{}", "index": json.dumps(index)})})
    with pytest.raises(MessageError):
        from_records(content, "upload")


@pytest.fixture()
def published(tmp_path_factory, tmp_path):
    """(CLIENT_ROOT, its shared folder, the published config, the federation facts)."""
    cfg = small_config(session_base(tmp_path_factory), "unused")
    root = link_simulation_root(prepare_federation(cfg), cfg, tmp_path / "root")
    init_server(root, cfg)
    shared = shared_dir(root)
    return root, shared, read_config(shared / "config.toml"), FederationInfo.load(shared / "federation.json")


def test_client_cache_encodes_once_per_client_and_notices_changed_files(published):
    root, shared, cfg, info = published
    cache = ClientCache()
    first = cache.client_data(root / "client_0", shared, cfg, info)
    assert cache.client_data(root / "client_0", shared, cfg, info) is first
    assert (cache.hits, cache.misses) == (1, 1)
    fresh = load_client_data(root / "client_0", shared, cfg, info)
    for split in ("train", "val", "public"):
        a, b = getattr(first, split), getattr(fresh, split)
        assert torch.equal(a.images, b.images) and torch.equal(a.input_ids, b.input_ids)
        assert torch.equal(a.has_image, b.has_image) and torch.equal(a.labels, b.labels)
    other = cache.client_data(root / "client_1", shared, cfg, info)       # another folder: its own data
    assert other.name == "client_1" and cache.misses == 2
    assert cache.client_data(root / "client_0", shared, cfg, info) is not first   # one entry: re-encoded
    assert cache.misses == 3
    tok = next(p for p in sorted((shared / "tokenizer").iterdir()) if p.is_file())
    st = tok.stat()
    os.utime(tok, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))   # a file rewritten in place
    cache.client_data(root / "client_0", shared, cfg, info)
    assert cache.misses == 4
    cfg.train.lr *= 2                                                    # another published configuration
    cache.client_data(root / "client_0", shared, cfg, info)
    assert cache.misses == 5


def test_supernode_idle_poll_is_capped_and_checked():
    import flwr.supernode.start_client_internal as node_loop

    from fedmm.engines.flower.supernode import CappedSleeps, cap_idle_poll

    saved = node_loop.time, node_loop.pull_objects
    try:
        assert cap_idle_poll(0.05)
        assert isinstance(node_loop.time, CappedSleeps) and node_loop.time.monotonic() > 0
        t0 = time.time()
        node_loop.time.sleep(3)                                          # Flower's idle wait
        assert time.time() - t0 < 1.0
        assert node_loop.pull_objects.keywords == {"initial_backoff": 0.05, "backoff_cap": 1.0}
        assert not cap_idle_poll(0.05)                                    # not the loop it was written for
    finally:
        node_loop.time, node_loop.pull_objects = saved
    sleeps = CappedSleeps(0.05, quiet=0.5)
    sleeps.sleep(0.01)                           # busy: the loop waits for its ClientApp's reply
    t0 = time.time()
    sleeps.sleep(3)
    assert time.time() - t0 < 0.5                # idle right after: capped
    time.sleep(0.6)
    t0 = time.time()
    sleeps.sleep(3)
    assert time.time() - t0 >= 2.9               # idle for longer than "quiet": Flower's own 3 s


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_clientapp_process_serves_its_supernode_and_follows_it_out(tmp_path: Path):
    """A SuperNode with --isolation process and its ClientApp process, against a TLS SuperLink: the
    ClientApp process comes up with an owner-only secret; when the SuperNode dies (SIGKILL) it exits
    by itself; stopping the node leaves nothing running and no secret behind."""
    certs = tmp_path / "certs"
    make_certs(certs, ["127.0.0.1", "localhost"], days=2)
    port, env = free_port(), flower_env(FLWR_HOME=str(tmp_path / "home"))
    link = ManagedProcess("superlink", superlink_argv(certs, host="127.0.0.1", port=port), tmp_path / "link.log", env)
    node = None
    try:
        wait_for_port("127.0.0.1", port, 60, link.proc)
        (tmp_path / "client_0" / "train").mkdir(parents=True)
        node = HospitalNode("client_0", free_port(), tmp_path / "logs", tmp_path, env, "process", node_poll=0.25,
                            superlink=f"127.0.0.1:{port}", client_dir=tmp_path / "client_0", ca=certs / "ca.crt")
        assert "--isolation" in node.supernode.proc.args and node.secret.stat().st_mode & 0o077 == 0
        _wait_for(lambda: READY_LINE in node.clientapp.tail(50), 120, "the ClientApp process")
        _wait_for(lambda: "SuperNode ID" in node.supernode.tail(50), 60, "the SuperNode")
        assert node.running()
        pid, started = node.clientapp.pid, start_time(node.clientapp.pid)
        node.supernode.kill()
        _wait_for(lambda: not node.clientapp.running(), 30, "the ClientApp process to follow its SuperNode")
        assert not process_alive(pid, started) and "stopped after 0 tasks" in node.clientapp.tail(20)
    finally:
        if node is not None:
            node.stop()
        link.stop()
    assert not node.secret.exists() and not any(p.running() for p in node.processes)
