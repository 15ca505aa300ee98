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


def test_progress_bars_count_each_pass_within_its_total():
    """The statistics pass after the last round gets its own bar instead of overfilling the last round's."""
    from io import StringIO

    from rich.console import Console

    from fedmm.cli.run_cmd import RichReporter

    reporter = RichReporter(Console(file=StringIO(), width=120))
    with reporter:
        for r in range(2):
            reporter.start_round(r, 2, 3)
            for i in range(3):
                reporter.client_done(f"client_{i}", {"val_score": 0.5})
            reporter.end_round(r, {"val_macro_f1_mean": 0.5, "wall_s": 1.0})
        for i in range(3):
            reporter.client_done(f"client_{i}", {"val_score": 0.0, "task": "bn_stats"})
    tasks = {t.description: (t.completed, t.total) for t in reporter.progress.tasks}
    assert tasks == {"rounds": (2, 2), "statistics pass": (3, 3)}
