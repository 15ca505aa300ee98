import json
import re

from typer.testing import CliRunner

from fedmm.cli.app import app

runner = CliRunner()


def _plain(output: str) -> str:
    """Error text without the frame and line wrapping of the rich error panel."""
    return re.sub(r"[\s\u2500-\u257f]+", " ", output)


def test_run_smoke_prints_table_and_writes_summary(tmp_path):
    args = ["run", "--preset", "smoke", "--rounds", "1", "--out", str(tmp_path), "--name", "cli",
            "-c", f"cache={tmp_path / 'cache'}", "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["strategy"] == "fedmm"
    # same name again is refused instead of overwriting a finished run
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "already holds a run" in _plain(again.output)
    # resuming a finished run re-evaluates and gives the same summary
    res = runner.invoke(app, ["run", "--resume", str(tmp_path / "cli"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["test"] == summary["test"]


def test_bad_override_is_a_usage_error(tmp_path):
    res = runner.invoke(app, ["run", "-c", "fed.rounds=many", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 2
    assert "fed.rounds" in _plain(res.output)
