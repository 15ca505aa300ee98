"""File exchange: same result as the in-process transport, the three-step CLI workflow, dropout and
bad uploads (left out with a reason; too few fails the round and keeps the global state)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from transport_cases import final_state, max_abs_diff, metrics_rows, reference_run, session_base, small_config
from typer.testing import CliRunner

from fedmm.cli.app import app
from fedmm.engines.store import ClientStateStore
from fedmm.engines.files import link_simulation_root, read_uploads, server_context, shared_dir, uploads_dir
from fedmm.engines.local import run_simulation
from fedmm.engines.loop import screen
from fedmm.engines.prepare import prepare_federation
from fedmm.engines.wire import check_upload
from fedmm.federated.messages import Message, MessageError
from fedmm.federated.params import model_key
from fedmm.io import load_arrays, read_json
from fedmm.engines.wire import save_message

runner = CliRunner()


def test_files_transport_matches_in_process(tmp_path_factory):
    ref = reference_run(tmp_path_factory)
    base = session_base(tmp_path_factory)
    run_dir = base / "runs" / "files"
    summary = run_simulation(small_config(base, "files"), run_dir, transport="files")
    diff = max_abs_diff(final_state(ref), final_state(run_dir))
    assert diff == 0.0, f"files transport differs from in-process by {diff}"
    assert metrics_rows(run_dir) == metrics_rows(ref)
    assert summary["test"] == json.loads((ref / "summary.json").read_text())["test"]
    root = run_dir / "client_root"
    for name in ("client_0", "client_1", "client_2", "client_3"):  # finish() delivered the final global state
        report = read_json(root / name / "best_model.json")
        assert report["global_round"] == 2 and report["local_round"] == 1
        assert (root / name / "best_model.safetensors").exists()


@pytest.fixture()
def client_root(tmp_path_factory, tmp_path):
    """A private CLIENT_ROOT linked to the cached small partition."""
    cfg = small_config(session_base(tmp_path_factory), "unused")
    return link_simulation_root(prepare_federation(cfg), cfg, tmp_path / "root")


def _cli(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _poison(stem: Path, name: str) -> None:
    """Rewrite one array of an upload with a NaN, keeping its JSON index consistent."""
    arrays = load_arrays(stem.with_suffix(".safetensors"))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nan
    save_file(arrays, str(stem.with_suffix(".safetensors")))


def test_three_step_workflow_with_dropout_and_bad_uploads(client_root, tmp_path_factory):
    root = client_root
    cache = session_base(tmp_path_factory) / "cache"
    _cli("server", "init", "--root", str(root), "--preset", "smoke", "--rounds", "2", "--min-clients", "3",
         *[x for o in (f"cache={cache}", "data.n_clients=4", "data.n_image_only=1", "data.n_text_only=1",
                       "train.local_epochs=1", "threads=1", "device=cpu") for x in ("-c", o)])
    shared = shared_dir(root)
    assert {p.name for p in shared.iterdir()} >= {"federation.json", "config.toml", "public", "tokenizer",
                                                  "latest.json", "global_round_0000.json"}
    again = runner.invoke(app, ["server", "init", "--root", str(root)])
    assert again.exit_code == 1 and "already holds a federation" in again.output

    _cli("clients", "train-all", "--root", str(root))
    up = uploads_dir(root, 0)
    assert sorted(p.name for p in up.glob("*.json")) == [f"client_{k}.json" for k in range(4)]
    _poison(up / "client_1", "shared/classifier.net.0.bias")      # corrupt values
    (up / "client_2.json").unlink()                                # a lost upload
    published = {p.name: p.read_bytes() for p in shared.glob("*.*") if p.is_file()}

    res = runner.invoke(app, ["server", "aggregate", "--root", str(root)])   # min_clients = 3, only 2 valid
    assert res.exit_code == 1
    assert "client_1: upload rejected" in res.output and "NaN" in res.output
    assert "client_2: no upload" in res.output and "min_clients = 3" in res.output
    assert {p.name: p.read_bytes() for p in shared.glob("*.*") if p.is_file()} == published
    assert read_json(root / "server" / "checkpoints" / "latest.json")["round"] == 0

    out = _cli("server", "aggregate", "--root", str(root), "--min-clients", "2")
    assert "round 1 aggregated: 2 uploads" in out
    assert read_json(shared / "latest.json")["round"] == 1
    rows = [json.loads(x) for x in (root / "server" / "metrics.jsonl").read_text().splitlines()]
    assert [r["client"] for r in rows] == ["client_0", "client_3", "global"]
    assert rows[-1]["missing"] == ["client_1", "client_2"] and rows[-1]["n_uploads"] == 2
    assert "1 of 2 rounds done" in _cli("server", "status", "--root", str(root))

    # an air-gapped site: only its own folder and the distributed global_vectors, upload carried by hand
    site = root.parent / "site"
    shutil.copytree(root / "client_0", site / "client_0", symlinks=False)
    shutil.copytree(shared, site / "global_vectors")
    carry = site / "outbox"
    _cli("client", "train", "--client-dir", str(site / "client_0"), "--shared-dir", str(site / "global_vectors"),
         "--upload-dir", str(carry))
    assert ClientStateStore(site / "client_0" / "state").rounds() == [0, 1]
    shutil.copytree(carry / "round_0001", uploads_dir(root, 1))
    _cli("client", "train", "--client-dir", str(root / "client_3"))
    # client_1 missed round 1's aggregation but trained round 0: it continues from its own state
    _cli("client", "train", "--client-dir", str(root / "client_1"))
    assert "round 2 aggregated: 3 uploads" in _cli("server", "aggregate", "--root", str(root), "--min-clients", "2")
    # fed.bn = recompute: one statistics pass after the last round (clients train nothing)
    pending = runner.invoke(app, ["server", "aggregate", "--root", str(root)])
    assert pending.exit_code == 1 and "statistics pass: no valid upload yet" in pending.output
    before = {p: p.read_bytes() for p in (root / "client_3" / "state").iterdir()}
    _cli("clients", "train-all", "--root", str(root))
    assert {p: p.read_bytes() for p in (root / "client_3" / "state").iterdir()} == before
    assert "BatchNorm statistics of" in _cli("server", "aggregate", "--root", str(root), "--min-clients", "2")
    done = runner.invoke(app, ["server", "aggregate", "--root", str(root)])
    assert done.exit_code == 1 and "all 2 rounds are done" in done.output

    out = _cli("client", "update", "--client-dir", str(root / "client_3"))
    assert "after round 2" in out
    model = load_arrays(root / "client_3" / "best_model.safetensors")
    final = load_arrays(shared / "global_round_0002.safetensors")
    shared_names = [k for k in final if k.startswith("shared/")]
    assert any(k.startswith("shared/image_encoder.") for k in shared_names)   # encoders are federated
    for k in shared_names:
        np.testing.assert_array_equal(model[model_key(k[len("shared/"):])], final[k])


def test_read_uploads_rejects_forged_and_malformed_uploads(client_root, tmp_path_factory):
    """Validation without training (the files read back, then the round loop's screen): uploads built
    from the spec, then broken one way each."""
    cfg = small_config(session_base(tmp_path_factory), "unused")
    from fedmm.engines.files import init_server

    ctx = init_server(client_root, cfg)
    state, _ = server_context(client_root).latest()
    n_logits = len(state.public_index)
    rng = np.random.default_rng(0)

    def good(name: str) -> Message:
        rows = lambda k: n_logits if k.startswith("public/") else 3  # noqa: E731
        arrays = {k: rng.normal(size=[rows(k) if s is None else s for s in shape]).astype(np.float32)
                  for k, shape in ctx.spec.items() if not k.startswith("summary/")}
        arrays["summary/image_centroids"] = np.zeros((2, ctx.head.d), np.float32)
        arrays["summary/image_counts"] = np.array([5, 6], np.float32)
        arrays["summary/image_hist"] = np.ones((2, len(ctx.info.classes)), np.float32)
        meta = {"client": name, "round": 0, "n_train": 10, "val_score": 0.5, "train_loss": 1.0,
                "trained_groups": ["classifier"], "modality": "multimodal"}
        return Message("upload", arrays, meta)

    assert check_upload(good("client_0"), ctx.spec, 0, ctx.info.clients, n_logits) == "client_0"
    breakages = {
        "client_0": lambda m: m.meta.update(client="client_1"),                        # claims another client
        "client_1": lambda m: m.meta.update(round=1),                                  # stale / future round
        "client_2": lambda m: m.arrays.update({"shared/classifier.net.0.bias": np.zeros(3, np.float32)}),
        "client_3": lambda m: m.arrays.update({"summary/image_counts": np.array([5.0, -1.0], np.float32)}),
    }
    folder = uploads_dir(client_root, 0)
    for name, breaks in breakages.items():
        msg = good(name)
        breaks(msg)
        save_message(msg, folder / name)
    replies, problems = read_uploads(folder, ctx.info.clients, 0)
    uploads, rejected = screen(replies, ctx.spec, 0, ctx.info.clients, n_logits)
    problems += rejected
    assert uploads == [] and len(problems) == 4
    text = "\n".join(problems)
    for needle in ("claims to come from 'client_1'", "answers round 1", "shape [3]", "must be >= 0"):
        assert needle in text
    more = [lambda m: m.meta.update(n_train=0), lambda m: m.meta.update(val_score=float("nan")),
            lambda m: m.meta.update(modality="video"), lambda m: m.arrays.pop("summary/image_hist"),
            lambda m: m.arrays.update({"public/logits": np.zeros((1, len(ctx.info.classes)), np.float32)}),
            lambda m: m.arrays.update({"shared/classifier.net.0.bias": m.arrays["shared/classifier.net.0.bias"]
                                       .astype(np.float64)}),
            lambda m: m.arrays.update({"extra/array": np.zeros(1, np.float32)})]
    for breaks in more:
        msg = good("client_0")
        breaks(msg)
        with pytest.raises(MessageError):
            check_upload(msg, ctx.spec, 0, ctx.info.clients, n_logits)


def test_client_state_store_continues_from_last_round_it_trained(tmp_path):
    import torch

    store = ClientStateStore(tmp_path)
    model = torch.nn.Linear(2, 2)
    for r in (0, 1):
        with torch.no_grad():
            model.weight.fill_(r)
        store.save(model, r)
    fresh = torch.nn.Linear(2, 2)
    assert store.load(fresh, 2) and float(fresh.weight.detach()[0, 0]) == 1.0   # round 2 missed: round 3 continues from 1
    store.save(fresh, 3)
    assert store.rounds() == [3]                                      # states older than r - 1 pruned
    assert not ClientStateStore(tmp_path / "none").load(fresh, 5)     # never trained: keeps its initialisation
