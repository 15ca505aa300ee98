"""Run outputs: summary.json (stable schema, docs/ARCHITECTURE.md §7), per-client results, plots, tables."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fedmm.data.modality import CLIENT_TYPES, SCENARIOS
from fedmm.federated.privacy import privacy_report
from fedmm.io import write_json


def write_outputs(run_dir: Path, cfg, results: dict, wall_s: float) -> dict:
    """Write summary.json, results_per_client.json and plots; return the summary."""
    summary = {
        "strategy": cfg.fed.strategy, "seed": int(cfg.seed), "rounds": int(cfg.fed.rounds),
        "wall_s": round(float(wall_s), 2), "test": results["test"], "client_types": results["client_types"],
        "per_class_recall": results["per_class_recall"], "val": results.get("val", {}),
        "rounds_detail": "metrics.jsonl",
    }
    summary["privacy"] = privacy_report(cfg)   # epsilon/delta under fed.dp=client, else "no formal guarantee"
    write_json(run_dir / "summary.json", summary)
    write_json(run_dir / "results_per_client.json", results["per_client"])
    try:
        plot_run(run_dir)
    except Exception as exc:  # plotting must never lose a finished run's results
        (run_dir / "plots_error.txt").write_text(f"plotting failed: {exc}\n")
    return summary


def write_inference_files(run_dir: Path, info, tokenizer: Path) -> None:
    """What using a trained client later (``fedmm predict``) needs beside config.toml and the
    checkpoints: ``federation.json`` (classes, vocabulary size, client names) and ``tokenizer/``
    (a copy of the tokenizer the run encoded its reports with; ``tokenizer`` is its folder or vocab.txt)."""
    run_dir, src = Path(run_dir), Path(tokenizer)
    info.save(run_dir / "federation.json")
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.is_file())
    tmp, dst = run_dir / ".tokenizer.tmp", run_dir / "tokenizer"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def plot_run(run_dir: Path) -> None:
    """PNG plots: validation macro-F1 per round by client type; test macro-F1 per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(run_dir) if r.get("client") != "global"]
    by_type: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        by_type.setdefault(r["modality"], {}).setdefault(r["round"], []).append(r["val_macro_f1"])
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for t, per_round in sorted(by_type.items()):
        xs = sorted(per_round)
        ax[0].plot([x + 1 for x in xs], [sum(per_round[x]) / len(per_round[x]) for x in xs], marker="o", label=t)
    ax[0].set(xlabel="round", ylabel="validation macro-F1", title="clients by type")
    ax[0].legend()
    summary = json.loads((run_dir / "summary.json").read_text())
    names = [s for s in SCENARIOS if s in summary["test"]]
    ax[1].bar(names, [summary["test"][s]["macro_f1"] for s in names])
    ax[1].set(ylim=(0, 1), ylabel="test macro-F1", title=f"{summary['strategy']} (seed {summary['seed']})")
    fig.tight_layout()
    fig.savefig(run_dir / "metrics.png", dpi=100)
    plt.close(fig)


def summary_rows(summary: dict) -> list[tuple[str, str, str, str, str]]:
    """(section, name, accuracy, macro_f1, macro_auroc) rows for a results table."""
    rows = []
    for section, keys in (("test", SCENARIOS), ("client type", CLIENT_TYPES)):
        table = summary["test" if section == "test" else "client_types"]
        for k in keys:
            if k in table:
                m = table[k]
                rows.append((section, k, f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", f"{m['macro_auroc']:.3f}"))
    return rows
