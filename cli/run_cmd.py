"""``fedmm run`` (one simulated federation) and ``fedmm sweep`` (strategies x seeds)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedmm.cli.errors import usage_errors
from fedmm.cli.preflight import load_cli_config, load_resume_config
from fedmm.engines.evaluate import summarize_seeds
from fedmm.engines.local import new_run_dir, resolve_transport, run_simulation
from fedmm.engines.report import summary_rows
from fedmm.federated.mechanisms import bn_stats


class RichReporter:
    """Round/client progress bars on the console; ``header`` and the bars appear at the first event,
    so a run that fails while preparing shows only its error."""

    def __init__(self, console: Console, header: str = "") -> None:
        self.console, self.header, self.started = console, header, False
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console)
        self.rounds = self.clients = None
        self.statistics, self.n_clients = False, 0

    def _begin(self) -> None:
        if not self.started:
            self.started = True
            if self.header:
                self.console.print(self.header, highlight=False)
            self.progress.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.progress.stop()

    def start_round(self, r, total_rounds, n_clients):
        self._begin()
        if self.rounds is None:
            self.rounds = self.progress.add_task("rounds", total=total_rounds, completed=r, status="")
        if self.clients is not None:
            self.progress.remove_task(self.clients)
        self.n_clients = n_clients
        self.clients = self.progress.add_task(f"round {r + 1} clients", total=n_clients, status="")

    def client_done(self, name, meta):
        if meta.get("task") == bn_stats.TASK:   # the statistics pass after the last round: a bar of its own
            if not self.statistics:
                self.progress.remove_task(self.clients)
                self.clients, self.statistics = self.progress.add_task("statistics pass", total=self.n_clients,
                                                                       status=""), True
            self.progress.update(self.clients, advance=1, status=name)
            return
        self.progress.update(self.clients, advance=1, status=f"{name} val F1 {meta['val_score']:.3f}")

    def end_round(self, r, info):
        self.progress.update(self.rounds, advance=1,
                             status=f"mean val F1 {info['val_macro_f1_mean']:.3f}  ({info['wall_s']:.0f} s)")

    def message(self, text):
        self._begin()
        self.console.print(text)


def results_table(summary: dict, title: str) -> Table:
    table = Table(title=title)
    for col in ("", "scenario / client type", "accuracy", "macro-F1", "macro-AUROC"):
        table.add_column(col)
    for row in summary_rows(summary):
        table.add_row(*row)
    return table


def run(
    strategy: Annotated[Optional[str], typer.Option(help="fedmm | fedavg | fedprox | local | centralized")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Federated rounds")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (partition, initialisation, training)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder holding run directories")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run directory name (default: strategy-seed-time)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", exists=True, dir_okay=False, help="TOML config")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("-c", help="Override: section.key=value (repeatable)")] = None,
    preset: Annotated[str, typer.Option(help="default | smoke (tiny, for tests) | scale (300 small clients)")] = "default",
    resume: Annotated[Optional[Path], typer.Option(help="Resume the run in this directory")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    transport: Annotated[Optional[str], typer.Option(
        help="local (in process, default) | files (file exchange) | flower (SuperLink + SuperNodes on "
             "127.0.0.1, TLS); a resumed run keeps its transport")] = None,
) -> None:
    """Run a simulated federation (default: 30 clients on synthcxr) and print the results table."""
    console = Console(quiet=quiet)
    if resume:
        cfg, run_dir = load_resume_config(resume), resume
    else:
        cfg = load_cli_config(config, overrides or [], preset, {
            "fed.strategy": strategy, "fed.rounds": rounds, "seed": seed, "device": device, "out": out, "name": name})
        with usage_errors(FileExistsError):
            run_dir = new_run_dir(cfg)
    with usage_errors(ValueError):
        transport = resolve_transport(transport, Path(run_dir), bool(resume), cfg.fed.strategy)
    with RichReporter(console, f"run directory: {run_dir}") as reporter:   # failures: fedmm.cli.errors
        summary = run_simulation(cfg, Path(run_dir), resume=bool(resume), reporter=reporter, transport=transport)
    console.print(results_table(summary, f"{summary['strategy']} - seed {summary['seed']} - "
                                         f"{summary['rounds']} rounds - {summary['wall_s']:.0f} s"))
    console.print(f"summary: {Path(run_dir) / 'summary.json'}")


def sweep(
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies")] = "fedmm,fedavg,fedprox,local,centralized",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds")] = "0,1,2",
    out: Annotated[Path, typer.Option(help="Folder for the runs and sweep.json")] = Path("runs/sweep"),
    config: Annotated[Optional[Path], typer.Option("--config", exists=True, dir_okay=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("-c", help="Override: section.key=value")] = None,
    preset: Annotated[str, typer.Option()] = "default",
) -> None:
    """Run strategies x seeds; write mean +- std per strategy to OUT/sweep.json (finished runs are reused)."""
    console = Console()
    results = {}
    plan = {strat: [load_cli_config(config, overrides or [], preset, {  # every config checked before any run
        "fed.strategy": strat, "seed": s, "out": str(out), "name": f"{strat}-seed{s}"}) for s in seeds.split(",")]
        for strat in strategies.split(",")}
    for strat, cfgs in plan.items():
        summaries = []
        for cfg in cfgs:
            s, run_dir = cfg.seed, out / cfg.name
            if (run_dir / "summary.json").exists():
                summaries.append(json.loads((run_dir / "summary.json").read_text()))
                continue
            console.print(f"[bold]{strat}[/] seed {s}")
            with RichReporter(console) as reporter:
                summaries.append(run_simulation(cfg, run_dir, resume=(run_dir / "checkpoints").exists(),
                                                reporter=reporter))
        results[strat] = summarize_seeds(summaries)
    (out / "sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=f"macro-F1, mean +- std over seeds {seeds}")
    cols = [("test", "full"), ("test", "image_only"), ("test", "text_only"), ("client_types", "image_only"),
            ("client_types", "text_only"), ("client_types", "multimodal")]
    table.add_column("strategy")
    for sec, key in cols:
        table.add_column(f"{'test' if sec == 'test' else 'clients'} {key}")
    for strat, res in results.items():
        cells = []
        for sec, key in cols:
            v = res.get(sec, {}).get(key, {}).get("macro_f1")
            cells.append(f"{v[0]:.3f} ± {v[1]:.3f}" if v else "-")
        table.add_row(strat, *cells)
    console.print(table)
    classes = sorted({c for res in results.values() for c in res.get("per_class_recall", {})})
    if classes:
        recall = Table(title="per-class recall (test full), mean +- std")
        recall.add_column("strategy")
        for c in classes:
            recall.add_column(c)
        for strat, res in results.items():
            got = res.get("per_class_recall", {})
            recall.add_row(strat, *[f"{got[c][0]:.2f} ± {got[c][1]:.2f}" if c in got else "-" for c in classes])
        console.print(recall)
