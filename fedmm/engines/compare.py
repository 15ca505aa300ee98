"""Comparing finished runs: read their summary.json files, group them over seeds, tabulate, plot.

A *run directory* holds ``summary.json``; a *sweep folder* (``fedmm sweep --out``) holds
run directories (``*/summary.json``) and usually ``sweep.json``. Runs are grouped by
(folder label, strategy): the label of a sweep folder is its name, the label of a run
directory the name of the folder it lies in, so ``runs/bench`` and
``runs/bench/fedmm-seed0 runs/bench/fedmm-seed1`` group alike. Each group holds the
mean and std over its runs (seeds) of every metric (:func:`summarize_seeds`, the
statistics of ``sweep.json``). A sweep folder whose run directories are gone is read
from its ``sweep.json`` (seeds unknown). Used by ``fedmm report`` and
``scripts/results_table.py``.
"""
from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np

from fedmm.engines.evaluate import summarize_seeds
from fedmm.engines.report import CLIENT_TYPES, SCENARIOS

SUMMARY = "summary.json"
SWEEP = "sweep.json"
SECTIONS = ("test", "client_types", "val", "per_class_recall")
# (section, key) columns of the markdown table of scripts/results_table.py
COLS = [("test", "full"), ("test", "image_only"), ("test", "text_only"), ("client_types", "image_only"),
        ("client_types", "text_only"), ("client_types", "multimodal")]


def read_folder(folder: Path) -> tuple[list[tuple[Path, dict]], dict | None]:
    """The (run directory, summary) pairs of a run directory or sweep folder, and the folder's
    sweep.json content when it has no finished run (else ``None``). Raises FileNotFoundError
    for a missing folder or one without any summary.json (and no sweep.json), ValueError
    naming a damaged file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; give run directories or sweep folders")
    files = [folder / SUMMARY] if (folder / SUMMARY).is_file() else sorted(folder.glob(f"*/{SUMMARY}"))
    if files:
        return [(f.parent, _read_json(f)) for f in files], None
    if (folder / SWEEP).is_file():
        return [], _read_json(folder / SWEEP)
    raise FileNotFoundError(f"{folder}: no {SUMMARY} (neither a finished run directory nor a sweep folder "
                            f"with finished runs)")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def collect(folders: list[Path]) -> list[dict]:
    """Groups of runs over seeds, in the order the folders (and their runs) come.

    Each group: ``folder`` (label), ``strategy``, ``seeds``, ``runs`` (run directories),
    ``source`` (``summary.json`` or ``sweep.json``) and, per section of summary.json
    (``test``, ``client_types``, ``val``, ``per_class_recall``), ``[mean, std]`` of each metric.
    A run listed twice (as a directory and inside its sweep folder) counts once.
    """
    read = [(Path(f), *read_folder(Path(f))) for f in folders]
    labels = _labels([(f, bool(runs)) for f, runs, _ in read])
    groups: dict[tuple[str, str], dict] = {}
    seen: set[Path] = set()
    for (folder, runs, sweep), label in zip(read, labels):
        for run_dir, summary in runs:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            try:
                key = (label, str(summary["strategy"]))
            except KeyError as exc:
                raise ValueError(f"{run_dir / SUMMARY}: no strategy; not a fedmm summary") from exc
            g = groups.setdefault(key, {"folder": label, "strategy": key[1], "seeds": [], "runs": [],
                                        "source": SUMMARY, "_summaries": []})
            g["seeds"].append(summary.get("seed"))
            g["runs"].append(str(run_dir))
            g["_summaries"].append(summary)
        for strategy, stats in (sweep or {}).items():
            groups.setdefault((label, strategy), {"folder": label, "strategy": strategy, "seeds": [], "runs": [],
                                                  "source": SWEEP, **{s: stats.get(s, {}) for s in SECTIONS}})
    out = []
    for g in groups.values():
        summaries = g.pop("_summaries", None)
        if summaries is not None:
            order = np.argsort([s if isinstance(s, int) else 0 for s in g["seeds"]], kind="stable")
            g["seeds"], g["runs"] = [g["seeds"][i] for i in order], [g["runs"][i] for i in order]
            stats = summarize_seeds(summaries)
            g.update({s: stats.get(s, {}) for s in SECTIONS})
            g["class_frequency"] = _first(class_frequency(Path(r)) for r in g["runs"])
        out.append(g)
    return out


def _labels(folders: list[tuple[Path, bool]]) -> list[str]:
    """Folder labels: a sweep folder's name, a run directory's parent's name; the path as given
    where two different folders would share a name."""
    names = [(f.parent if (f / SUMMARY).is_file() else f) for f, _ in folders]
    by_name: dict[str, set[Path]] = {}
    for n in names:
        by_name.setdefault(n.resolve().name, set()).add(n.resolve())
    return [n.resolve().name if len(by_name[n.resolve().name]) == 1 else str(n) for n in names]


def _first(values):
    return next((v for v in values if v), None)


def class_frequency(run_dir: Path) -> dict[str, float] | None:
    """How often each class occurs in the run's dataset (synthcxr: its priors; a dataset folder:
    label counts of its manifest.csv); ``None`` when that cannot be told."""
    try:
        with open(Path(run_dir) / "config.toml", "rb") as fh:
            dataset = str(tomllib.load(fh).get("data", {}).get("dataset", "synthcxr"))
        if dataset == "synthcxr":
            from fedmm.data.synth import SYNTH_CLASSES, SYNTH_PRIORS

            return dict(zip(SYNTH_CLASSES, SYNTH_PRIORS))
        from fedmm.data.manifest import load_manifest

        data = load_manifest(dataset, require_labels=False, verify_images=False)
        counts = Counter(label for rec in data.records for label in rec.labels)
        return {c: float(n) for c, n in counts.items()} or None
    except (OSError, ValueError, tomllib.TOMLDecodeError, AttributeError):
        return None


def recall_classes(groups: list[dict], requested: list[str] | None = None, n: int = 2) -> list[str]:
    """The classes whose recall is compared: ``requested``, else the ``n`` rarest classes of the
    runs' dataset (e.g. nodule and pneumothorax on synthcxr), else (rarity unknown) every class."""
    if requested:
        return list(requested)
    classes = sorted({c for g in groups for c in g.get("per_class_recall", {})})
    freq = _first(g.get("class_frequency") for g in groups)
    if freq and all(c in freq for c in classes):
        return sorted(classes, key=lambda c: (freq[c], c))[:n]
    return classes


def metric_rows(groups: list[dict], recall: list[str], metric: str = "macro_f1") -> list[tuple[str, list]]:
    """(row name, per group ``[mean, std]`` or ``None``) rows: test scenarios, client types present,
    then the recall of ``recall``'s classes."""
    rows = [(f"test {s}", [g.get("test", {}).get(s, {}).get(metric) for g in groups]) for s in SCENARIOS]
    types = [t for t in CLIENT_TYPES if any(t in g.get("client_types", {}) for g in groups)]
    rows += [(f"clients {t}", [g.get("client_types", {}).get(t, {}).get(metric) for g in groups]) for t in types]
    rows += [(f"recall {c}", [g.get("per_class_recall", {}).get(c) for g in groups]) for c in recall]
    return [(name, vals) for name, vals in rows if any(v is not None for v in vals)]


def report_json(groups: list[dict], recall: list[str]) -> dict:
    """What ``fedmm report --json`` writes: the compared recall classes and the groups."""
    return {"recall_classes": recall, "groups": groups}


def _cell100(stat) -> str:
    return "-" if stat is None else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def markdown_table(groups: list[dict], recall: list[str]) -> list[str]:
    """Markdown lines of ``scripts/results_table.py``: one row per group, macro-F1 x100 (mean ± std)
    per scenario and client type, then the recall (x100) of ``recall``'s classes."""
    head = ["runs", "strategy", "seeds", "test full", "test image_only", "test text_only", "image-only clients",
            "text-only clients", "multimodal clients"] + [f"recall {c}" for c in recall]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [_cell100(g.get(sec, {}).get(k, {}).get("macro_f1")) for sec, k in COLS]
        cells += [_cell100(g.get("per_class_recall", {}).get(c)) for c in recall]
        seeds = ",".join(str(s) for s in g["seeds"]) or "-"
        lines.append(f"| {g['folder']} | {g['strategy']} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def plot_comparison(groups: list[dict], path: Path, metric: str = "macro_f1") -> None:
    """Grouped bars of test ``metric``: scenario on the x axis, one bar per (folder, strategy),
    error bars = std over seeds; a second panel by client type. Written as PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("test", [s for s in SCENARIOS if any(s in g.get("test", {}) for g in groups)], "test scenario"),
              ("client_types", [t for t in CLIENT_TYPES if any(t in g.get("client_types", {}) for g in groups)],
               "client type")]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise ValueError("nothing to plot: the runs have no test metrics")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1, 4.2), squeeze=False)
    width = 0.8 / max(1, len(groups))
    for ax, (section, keys, xlabel) in zip(axes[0], panels):
        x = np.arange(len(keys))
        for i, g in enumerate(groups):
            stats = [g.get(section, {}).get(k, {}).get(metric) for k in keys]
            means = [s[0] if s else np.nan for s in stats]
            stds = [s[1] if s else 0.0 for s in stats]
            ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=stds, capsize=3,
                   label=f"{g['folder']} / {g['strategy']} (n={len(g['seeds']) or '?'})")
        ax.set_xticks(x, keys)
        ax.set(ylim=(0, 1), xlabel=xlabel, ylabel=f"test {metric.replace('macro_f1', 'macro-F1')}")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle("mean ± std over seeds")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
