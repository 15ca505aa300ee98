"""Errors a person can act on: every expected failure of ``fedmm`` prints a short message naming
the option/key/file/row, exits non-zero (2 for usage errors), shows no traceback and leaves no
half-made run directory behind; ``--debug`` / ``FEDMM_DEBUG=1`` show the traceback instead."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedmm.cli.app import app
from fedmm.cli.errors import FedmmGroup, split_debug_flag
from fedmm.config import load_config, to_toml
from fedmm.deploy.processes import free_port

runner = CliRunner(env={"FEDMM_DEBUG": None, "FEDMM_CACHE": None})
MAX_LINES = 5


def _fails(args: list[str], code: int | None, *needles: str) -> str:
    """Invoke ``fedmm args``; check exit code (any non-zero when ``code`` is None), shortness, no traceback."""
    res = runner.invoke(app, [str(a) for a in args])
    out = res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code if code is not None else res.exit_code != 0, (res.exit_code, out)
    assert out.startswith("error: "), out
    assert len(out.splitlines()) <= MAX_LINES, out
    assert "Traceback" not in out and "locals" not in out, out
    for needle in needles:
        assert needle in out, (needle, out)
    return out


def _run_args(tmp_path: Path, *args: str) -> list[str]:
    return ["run", *args, "--out", str(tmp_path / "runs"), "-c", f"cache={tmp_path / 'cache'}", "--quiet"]


def _nothing_left(tmp_path: Path) -> None:
    """No run directory was made, and no half-built folder is left in the cache."""
    assert not (tmp_path / "runs").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]


def _dataset(folder: Path, header: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return folder


def _fake_run(folder: Path) -> Path:
    """A run directory as 'fedmm run' leaves it after setting up (config.toml, checkpoints/)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.toml").write_text(to_toml(load_config(None, [], "smoke")))
    return folder


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("args, needles", [
    (["--bogus"], ["--bogus", "fedmm run --help"]),
    (["-c", "nosuch.key=1"], ["-c nosuch.key=1", "nosuch"]),
    (["-c", "fed.round=3"], ["fed.round", "did you mean fed.rounds"]),
    (["-c", "fed.rounds=abc"], ["fed.rounds", "integer", "'abc'"]),
    (["-c", "fedrounds"], ["-c fedrounds", "key=value"]),
    (["--strategy", "foo"], ["strategy 'foo'", "fed.strategy", "fedavg"]),
    (["-c", "fed.strategy=foo"], ["strategy 'foo'", "fed.strategy"]),
    (["--transport", "pigeon"], ["transport 'pigeon'", "flower"]),
    (["-c", "model.attention_backend=warp"], ["backend 'warp'", "model.attention_backend", "triton"]),
    (["--device", "tpu"], ["device 'tpu'", "cpu"]),
    (["--preset", "nope"], ["preset 'nope'", "smoke"]),
    (["-c", "data.n_image_only=40"], ["data.n_image_only", "data.n_clients"]),
    (["-c", "data.dataset={tmp}/nonexistent"], ["data.dataset", "nonexistent", "manifest.csv"]),
    (["--resume", "{tmp}/nonexistent"], ["--resume", "nonexistent"]),
    (["--resume", "{tmp}"], ["--resume", "not a run directory"]),
])
def test_usage_errors_exit_2_and_name_the_culprit(tmp_path, args, needles):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    _fails(_run_args(tmp_path, *args), 2, *needles)
    _nothing_left(tmp_path)


def test_bad_toml_config_names_file_and_key(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text("seed = 1\n[fed]\nrouns = 3\n")
    _fails(_run_args(tmp_path, "--config", str(toml)), 2, "exp.toml", "fed.rouns", "fed.rounds")
    toml.write_text("seed = = 1\n")
    _fails(_run_args(tmp_path, "--config", str(toml)), 2, "exp.toml", "line 1")
    _nothing_left(tmp_path)


def test_sweep_checks_every_config_before_running(tmp_path):
    _fails(["sweep", "--strategies", "fedmm,foo", "--out", str(tmp_path / "runs")], 2, "strategy 'foo'")
    _nothing_left(tmp_path)


def test_malformed_dataset_names_file_and_row(tmp_path):
    nocol = _dataset(tmp_path / "nocol", "id,image,text,split", ["a,,a report,train"])
    _fails(_run_args(tmp_path, "-c", f"data.dataset={nocol}"), 1, f"{nocol / 'manifest.csv'}", "label")
    badrows = _dataset(tmp_path / "badrows", "id,image,text,label", ["a,,one report,", "b,,another report,"])
    _fails(_run_args(tmp_path, "-c", f"data.dataset={badrows}"), 1, f"{badrows / 'manifest.csv'}:2", "empty label")
    huge = _dataset(tmp_path / "huge", "id,image,text,label", ["a,,fine,x", "b,," + "y" * 140_000 + ",x"])
    _fails(_run_args(tmp_path, "-c", f"data.dataset={huge}"), 1, f"{huge / 'manifest.csv'}:3", "CSV")
    _nothing_left(tmp_path)


def test_too_few_rows_for_the_clients_fails_before_the_run_directory(tmp_path):
    tiny = _dataset(tmp_path / "tiny", "id,image,text,label,split",
                    [f"r{i},,report number {i},c{i % 2},train" for i in range(8)])
    _fails(_run_args(tmp_path, "-c", f"data.dataset={tiny}"), 1, "data.n_clients=30", "8 training rows",
           "lower data.n_clients")
    _nothing_left(tmp_path)
    _fails(_run_args(tmp_path, "-c", "data.n_samples=50"), 1, "data.n_clients=30", "data.n_samples=50")
    _nothing_left(tmp_path)


def test_data_partition_errors(tmp_path):
    tiny = _dataset(tmp_path / "tiny", "id,image,text,label", [f"r{i},,report {i},c{i % 2}" for i in range(8)])
    _fails(["data", "partition", tiny, "--out", tmp_path / "part"], 1, "8 training rows", "fewer clients")
    _fails(["data", "partition", tiny, "--out", tmp_path / "part", "--mode", "bogus"], 2, "bogus")
    assert not (tmp_path / "part").exists()


@pytest.mark.parametrize("name, text, needles", [
    ("checkpoints/latest.json", "{not json", ["latest.json", "cannot be resumed"]),
    ("checkpoints/latest.json", '{"round": 2, "wall_s": 1.0}', ["server_round_0002", "cannot be resumed"]),
    ("config.toml", "seed = = 1\n", ["config.toml", "line 1"]),
    ("config.toml", "[fed]\nrouns = 3\n", ["config.toml", "fed.rouns"]),
])
def test_resume_of_a_damaged_run_names_the_file_and_writes_nothing(tmp_path, name, text, needles):
    run_dir = _fake_run(tmp_path / "run")
    (run_dir / name).write_text(text)
    before = _files(run_dir)
    _fails(["run", "--resume", run_dir, "--quiet"], 1, *needles)
    assert _files(run_dir) == before


def test_deploy_errors(tmp_path):
    root = tmp_path / "root"
    (root / "server").mkdir(parents=True)
    (root / "server" / "config.toml").write_text("")
    (root / "client_0" / "train").mkdir(parents=True)
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    address = f"127.0.0.1:{free_port()}"      # nothing listens there
    start = ["deploy", "start", "--root", root, "--superlink"]
    _fails([*start, address, "--insecure"], 1, "cannot reach the SuperLink", address)
    _fails([*start, "nohostport", "--insecure"], 2, "nohostport", "HOST:PORT")
    _fails([*start, address, "--ca", tmp_path / "missing.crt"], 2, "missing.crt", "not found")
    _fails([*start, address, "--ca", garbage], 2, "not a PEM certificate")
    _fails(["deploy", "superlink", "--certs", tmp_path / "nocerts", "--dry-run"], 2, "nocerts", "deploy certs")
    _fails(["deploy", "supernode", "--client-dir", root / "client_0", "--superlink", address, "--insecure",
            "--auth-key", tmp_path / "nokey", "--dry-run"], 2, "nokey", "node-key")
    _fails(["deploy", "register", tmp_path / "none.pub", "--root", root, "--superlink", address, "--insecure"],
           2, "none.pub")


def test_every_app_hides_locals_and_the_root_maps_errors():
    assert isinstance(typer.main.get_command(app), FedmmGroup)
    todo, seen = [app], 0
    while todo:
        current = todo.pop()
        seen += 1
        assert current.pretty_exceptions_show_locals is False
        todo += [group.typer_instance for group in current.registered_groups]
    assert seen >= 6                      # root, data, client, clients, server, deploy


def test_debug_flag_is_taken_off_the_command_line():
    assert split_debug_flag(["run", "--debug", "--rounds", "1"]) == (["run", "--rounds", "1"], True)
    assert split_debug_flag(["run", "--", "--debug"]) == (["run", "--", "--debug"], False)


def test_fedmm_debug_env_lets_the_exception_through(tmp_path):
    run_dir = _fake_run(tmp_path / "run")
    (run_dir / "checkpoints" / "latest.json").write_text("{not json")
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--quiet"], env={"FEDMM_DEBUG": "1"})
    assert isinstance(res.exception, ValueError) and "latest.json" in str(res.exception)
    assert "error:" not in res.output


def test_debug_flag_shows_the_traceback(tmp_path):
    run_dir = _fake_run(tmp_path / "run")
    (run_dir / "checkpoints" / "latest.json").write_text("{not json")
    env = {k: v for k, v in os.environ.items() if k != "FEDMM_DEBUG"}
    proc = subprocess.run([sys.executable, "-P", "-m", "fedmm.cli.app", "run", "--resume", str(run_dir), "--debug"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "check_checkpoint" in proc.stderr
    assert "locals" not in proc.stderr
