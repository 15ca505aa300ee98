"""``fedmm predict``: a trained client's model on new cases gives what the final evaluation computed,
single files work with either modality, bad rows are skipped with a reason, outputs have the
documented columns, a missing run or client is one error line.

Uses the session's small in-process reference run (transport_cases: 4 clients, 1 image-only,
1 text-only, 2 rounds, fedmm with prototypes) and one 1-round run over the file exchange.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transport_cases import reference_run, session_base, small_config
from typer.testing import CliRunner

from fedmm.cli.app import app
from fedmm.config import read_config
from fedmm.data.manifest import load_manifest
from fedmm.engines.local import run_simulation
from fedmm.engines.predict import load_predictor
from fedmm.engines.predict_cases import predict_cases, single_case
from fedmm.engines.prepare import prepare_federation
from fedmm.engines.store import ClientStore
from fedmm.federated.client import build_model, client_init_seed
from fedmm.federated.messages import Message
from fedmm.federated.params import load_shared
from fedmm.federated.server import ServerState
from fedmm.federated.train import own_view, predict_rows, view_rows
from fedmm.io import read_json
from fedmm.engines.wire import load_message

runner = CliRunner(env={"FEDMM_DEBUG": None})
CLIENTS = {"client_0": "image_only", "client_1": "text_only", "client_2": "multimodal"}
ATOL = 1e-5   # probabilities are written with 6 decimals


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory)


@pytest.fixture(scope="module")
def fed(ref):
    return prepare_federation(read_config(ref / "config.toml"))


def _invoke(*args) -> tuple[int, str]:
    res = runner.invoke(app, ["predict", *map(str, args)])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, res.output


def _ok(*args) -> str:
    code, out = _invoke(*args)
    assert code == 0, out
    return out


def _engine_probs(run_dir: Path, fed, client: str, view: str) -> np.ndarray:
    """Softmax [N_test, C] of the client's model as the final evaluation assembles and runs it."""
    cfg = read_config(run_dir / "config.toml")
    rounds = int(cfg.fed.rounds)
    state = ServerState.from_message(load_message(run_dir / "checkpoints" / f"server_round_{rounds:04d}"))
    index = [c.name for c in fed.clients].index(client)
    model = build_model(cfg, fed.vocab_size, len(fed.classes), client_init_seed(cfg, index))
    ClientStore(run_dir / "clients" / client).load(model, rounds - 1)
    load_shared(model, state.shared, prefix="")
    logits = predict_rows(model, fed.test, "cpu", state.gv, (view,), cfg.train.eval_batch_size)[view]
    return torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _probs(rows: list[dict], classes: list[str]) -> np.ndarray:
    return np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_predictions_on_the_test_rows_match_the_final_evaluation(ref, fed, tmp_path, client):
    view = own_view(CLIENTS[client])
    out = tmp_path / "pred.csv"
    _ok(ref, "--client", client, "--manifest", fed.root / "test", "--out", out, "--device", "cpu")
    rows = _csv(out)
    keep = view_rows(fed.test, view)
    assert [r["id"] for r in rows] == [i for i, k in zip(fed.test.ids, keep) if k]
    expected = _engine_probs(ref, fed, client, view)[keep]
    np.testing.assert_allclose(_probs(rows, fed.classes), expected, atol=ATOL, rtol=0)
    assert [r["predicted_label"] for r in rows] == [fed.classes[i] for i in expected.argmax(1)]
    # ... and the accuracy the run recorded for this client's deployed view
    acc = float(np.mean([r["predicted_label"] == r["label"] for r in rows]))
    assert acc == pytest.approx(read_json(ref / "results_per_client.json")[client][view]["accuracy"], abs=1e-12)
    used = {"full": {"both"}, "image_only": {"image"}, "text_only": {"text"}}[view]
    assert {r["modalities"] for r in rows} <= used


def _a_full_test_row(fed) -> tuple[int, object]:
    data = load_manifest(fed.root / "test", require_labels=False)
    k = next(i for i, rec in enumerate(data.records) if rec.image is not None and rec.text is not None)
    assert fed.test.ids[k] == data.records[k].id
    return k, data.records[k]


def test_single_files_image_report_or_both(ref, fed, tmp_path):
    rounds = int(read_config(ref / "config.toml").fed.rounds)
    gv = ServerState.from_message(load_message(ref / "checkpoints" / f"server_round_{rounds:04d}")).gv
    assert gv is not None and len(gv.pair_img) > 0   # surrogates are available to fill a missing modality
    k, rec = _a_full_test_row(fed)
    cases = {"image": ["--image", rec.image], "text": ["--report", rec.text],
             "both": ["--image", rec.image, "--report", rec.text]}
    views = {"image": "image_only", "text": "text_only", "both": "full"}
    for used, args in cases.items():
        out = tmp_path / f"{used}.json"
        _ok(ref, "--client", "client_2", *args, "--id", "case-1", "--out", out)
        got = read_json(out)
        [row] = got["predictions"]
        assert row["id"] == "case-1" and row["modalities"] == used
        fill = read_config(ref / "config.toml").model.surrogate_fill    # which missing modality surrogates fill
        filled = {"image": fill in ("both", "text"), "text": fill in ("both", "image"), "both": False}[used]
        assert row["surrogate"] is filled
        expected = _engine_probs(ref, fed, "client_2", views[used])[k]
        np.testing.assert_allclose([row[f"p_{c}"] for c in fed.classes], expected, atol=ATOL, rtol=0)
        assert got["skipped"] == [] and got["client"] == "client_2"
    # a text-only client reads only the report of a full case; an image-only client cannot read a report
    out = tmp_path / "t.json"
    _ok(ref, "--client", "client_1", "--image", rec.image, "--report", rec.text, "--out", out)
    assert read_json(out)["predictions"][0]["modalities"] == "text"
    code, text = _invoke(ref, "--client", "client_0", "--report", rec.text)
    assert code == 1 and "image-only model" in text and "error: no predictions" in text
    # without global vectors the learned missing token fills in: no surrogate
    pred = load_predictor(ref, "client_2", device="cpu")
    no_gv = predict_cases(dataclasses.replace(pred, gv=None), single_case(rec.image, None))
    assert no_gv.rows[0]["surrogate"] is False and no_gv.rows[0]["modalities"] == "image"


def test_bad_rows_are_reported_and_skipped(ref, fed, tmp_path):
    _, rec = _a_full_test_row(fed)
    data = tmp_path / "cases"
    (data / "img").mkdir(parents=True)
    (data / "img" / "good.png").write_bytes(rec.image.read_bytes())
    (data / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    lines = ["id,image,text",                                    # line 1
             f"good,img/good.png,{rec.text}",                    # 2: both
             f"text,,{rec.text}",                                # 3: report only
             f"broken,img/broken.png,{rec.text}",                # 4: unreadable image -> skipped, not degraded
             "gone,img/missing.png,",                            # 5: no usable image, no text
             ",,",                                               # 6: empty row
             f"\"tab\tid\",img/good.png,{rec.text}",             # 7: id with a control character
             f"good,img/good.png,{rec.text}",                    # 8: duplicate id
             "image,img/good.png,"]                              # 9: image only
    (data / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "pred.json"
    text = _ok(ref, "--client", "client_2", "--manifest", data, "--out", out)
    got = read_json(out)
    assert [r["id"] for r in got["predictions"]] == ["good", "text", "image"]
    assert [r["modalities"] for r in got["predictions"]] == ["both", "text", "image"]
    skipped = {s["row"]: s["reason"] for s in got["skipped"]}
    assert set(skipped) == {4, 5, 6, 7, 8}
    assert all(s["file"] == str(data / "manifest.csv") for s in got["skipped"])
    assert "unreadable image" in skipped[4] and skipped[4].endswith("row skipped")
    assert "no usable image and no text" in skipped[5]
    assert "empty id" in skipped[6] and "control characters" in skipped[7] and "duplicate id" in skipped[8]
    assert f"{data / 'manifest.csv'}:4:" in text and "skipped" in text
    # the CSV holds the same predictions
    csv_out = tmp_path / "pred.csv"
    _ok(ref, "--client", "client_2", "--manifest", data / "manifest.csv", "--out", csv_out)
    assert [r["id"] for r in _csv(csv_out)] == ["good", "text", "image"]


def test_outputs_have_the_documented_columns(ref, fed, tmp_path):
    columns = ["id", "predicted_label", *[f"p_{c}" for c in fed.classes], "modalities", "surrogate", "label"]
    _ok(ref, "--client", "client_3", "--manifest", fed.root / "test", "--out", tmp_path / "p.csv")
    _ok(ref, "--client", "client_3", "--manifest", fed.root / "test", "--out", tmp_path / "p.json")
    with open(tmp_path / "p.csv", newline="") as fh:
        assert next(csv.reader(fh)) == columns
    rows, got = _csv(tmp_path / "p.csv"), read_json(tmp_path / "p.json")
    assert got["columns"] == columns and got["classes"] == fed.classes and len(rows) == len(got["predictions"])
    assert all(set(r) == set(columns) for r in got["predictions"])   # JSON objects: key order is not kept
    for probs in (_probs(rows, fed.classes), _probs(got["predictions"], fed.classes)):
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5, rtol=0)
        assert (probs >= 0).all()
    assert [r["predicted_label"] for r in rows] == [fed.classes[i] for i in _probs(rows, fed.classes).argmax(1)]
    assert {r["surrogate"] for r in rows} <= {"true", "false"}
    assert [r["id"] for r in rows] == [r["id"] for r in got["predictions"]]


def _error_line(code: int, out: str, *needles: str) -> None:
    assert code in (1, 2) and out.startswith("error: "), out
    assert len(out.strip().splitlines()) <= 2 and "Traceback" not in out, out
    for needle in needles:
        assert needle in out, (needle, out)


def test_missing_run_or_client_is_one_error_line(ref, fed, tmp_path):
    case = ["--report", "a report"]
    _error_line(*_invoke(tmp_path / "nope", "--client", "client_0", *case), str(tmp_path / "nope"), "fedmm run")
    _error_line(*_invoke(tmp_path, "--client", "client_0", *case), str(tmp_path), "run directory")
    _error_line(*_invoke(ref, "--client", "client_9", *case), "client_9", "client_0, client_1")
    _error_line(*_invoke(ref, *case), "--client")
    _error_line(*_invoke(ref, "--client", "client_0"), "--image", "--report")
    _error_line(*_invoke(ref, "--client", "client_0", *case, "--out", tmp_path / "p.txt"), ".csv or .json")
    _error_line(*_invoke(ref, "--client", "client_0", "--image", tmp_path / "x.png"), "x.png", "no such file")
    # a run that did not save its tokenizer says how to write it
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    for name in ("config.toml", "transport.json", "checkpoints/latest.json"):
        (old / name).write_bytes((ref / name).read_bytes())
    rounds = read_json(ref / "checkpoints" / "latest.json")["round"]
    for ext in ("json", "safetensors"):
        name = f"checkpoints/server_round_{rounds:04d}.{ext}"
        (old / name).write_bytes((ref / name).read_bytes())
    _error_line(*_invoke(old, "--client", "client_0", *case), "federation.json", f"fedmm run --resume {old}")


@pytest.fixture(scope="module")
def files_run(tmp_path_factory) -> Path:
    """A 1-round run over the file exchange: its clients' folders are deployments' client folders."""
    base = session_base(tmp_path_factory)
    run_dir = base / "runs" / "predict_files"
    if not (run_dir / "summary.json").exists():
        run_simulation(small_config(base, "predict_files", "fed.rounds=1", "workers=1"), run_dir, transport="files")
    return run_dir


def test_a_deployed_client_folder_predicts_like_its_run(files_run, fed, tmp_path):
    root = files_run / "client_root"
    args = ["--manifest", fed.root / "test", "--device", "cpu"]
    _ok(files_run, "--client", "client_2", *args, "--out", tmp_path / "run.json")
    _ok(root / "client_2", *args, "--out", tmp_path / "folder.json")
    _ok(root, "--client", "client_2", *args, "--out", tmp_path / "root.json")
    by_run, by_folder, by_root = (read_json(tmp_path / f"{n}.json") for n in ("run", "folder", "root"))
    assert len(by_run["predictions"]) == len(fed.test)
    for other in (by_folder, by_root):
        assert [r["id"] for r in other["predictions"]] == [r["id"] for r in by_run["predictions"]]
        np.testing.assert_allclose(_probs(other["predictions"], fed.classes),
                                   _probs(by_run["predictions"], fed.classes), atol=ATOL, rtol=0)
        assert [r["surrogate"] for r in other["predictions"]] == [r["surrogate"] for r in by_run["predictions"]]
    acc = float(np.mean([r["predicted_label"] == r["label"] for r in by_folder["predictions"]]))
    assert acc == pytest.approx(read_json(files_run / "results_per_client.json")["client_2"]["full"]["accuracy"],
                                abs=1e-12)
    # a folder whose model was never delivered says which step writes it
    (root / "client_3" / "best_model.safetensors").rename(tmp_path / "moved.safetensors")
    try:
        _error_line(*_invoke(root / "client_3", "--report", "a report"), "best_model.safetensors",
                    "fedmm client update")
    finally:
        (tmp_path / "moved.safetensors").rename(root / "client_3" / "best_model.safetensors")
