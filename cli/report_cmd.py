"""``fedmm report``: compare finished runs (run directories and sweep folders) over seeds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fedmm.cli.errors import usage_error
from fedmm.engines.compare import collect, metric_rows, plot_comparison, recall_classes, report_json


def _cell(stat) -> str:
    return "-" if stat is None else f"{stat[0]:.3f} ± {stat[1]:.3f}"


def comparison_table(groups: list[dict], recall: list[str]) -> Table:
    """Rows: test scenarios, client types and recall classes; one column per (folder, strategy):
    macro-F1 (recall rows: recall) as mean ± std over the group's seeds."""
    table = Table(title="macro-F1 (recall rows: recall), mean ± std over seeds")
    table.add_column("")
    for g in groups:
        table.add_column(f"{g['folder']} / {g['strategy']}", justify="right")
    table.add_row("seeds", *[",".join(str(s) for s in g["seeds"]) or "? (sweep.json)" for g in groups])
    for name, stats in metric_rows(groups, recall):
        table.add_row(name, *[_cell(s) for s in stats])
    return table


def report(
    folders: Annotated[list[Path], typer.Argument(
        help="Run directories (with summary.json) and sweep folders (fedmm sweep --out: */summary.json or "
             "sweep.json)", show_default=False)],
    recall: Annotated[Optional[str], typer.Option(
        help="Comma-separated classes whose recall is compared (default: the two rarest of the dataset)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the comparison as JSON here")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a comparison bar plot (PNG) here")] = None,
) -> None:
    """Compare runs grouped by (folder, strategy): macro-F1 mean ± std over seeds per test scenario
    and client type, and the recall of the rarest classes."""
    console = Console()
    requested = [c.strip() for c in recall.split(",") if c.strip()] if recall else None
    groups = collect(folders)                       # missing / empty folders: error via fedmm.cli.errors
    classes = recall_classes(groups, requested)
    if requested:
        known = {c for g in groups for c in g.get("per_class_recall", {})}
        unknown = [c for c in requested if c not in known]
        if unknown:
            raise usage_error(f"--recall: no recall for {', '.join(unknown)} in these runs; classes: "
                              f"{', '.join(sorted(known)) or 'none'}")
    console.print(comparison_table(groups, classes))
    for g in groups:
        console.print(f"{g['folder']} / {g['strategy']}: {len(g['runs']) or 'sweep.json'} run(s)"
                      + (f" ({', '.join(g['runs'])})" if g["runs"] else ""), highlight=False, soft_wrap=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report_json(groups, classes), indent=2) + "\n")
        console.print(f"json: {json_out}", highlight=False, soft_wrap=True)
    if plot:
        plot_comparison(groups, plot)
        console.print(f"plot: {plot}", highlight=False, soft_wrap=True)
