"""Markdown tables of sweep results: macro-F1 x100 (mean ± std over seeds) per scenario and
client type, and the recall of chosen classes.

    python scripts/results_table.py runs/bench runs/bench-strict [--recall nodule,pneumothorax]

Each folder is a ``fedmm sweep --out`` folder; its runs' summary.json files are read
(not sweep.json, so a partial sweep is tabulated too) and grouped by strategy.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLS = [("test", "full"), ("test", "image_only"), ("test", "text_only"), ("client_types", "image_only"),
        ("client_types", "text_only"), ("client_types", "multimodal")]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def rows(folder: Path, recall: list[str]) -> list[str]:
    groups: dict[str, list[dict]] = {}
    for f in sorted(folder.glob("*/summary.json")):
        s = json.loads(f.read_text())
        groups.setdefault(s["strategy"], []).append(s)
    out = []
    for strat, runs in groups.items():
        seeds = ",".join(str(s["seed"]) for s in sorted(runs, key=lambda s: s["seed"]))
        cells = [_cell([s[sec][k]["macro_f1"] for s in runs if k in s.get(sec, {})]) for sec, k in COLS]
        cells += [_cell([s["per_class_recall"][c] for s in runs if c in s["per_class_recall"]]) for c in recall]
        out.append(f"| {folder.name} | {strat} | {seeds} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--recall", default="nodule,pneumothorax")
    args = ap.parse_args()
    recall = [c for c in args.recall.split(",") if c]
    head = ["runs", "strategy", "seeds", "test full", "test image_only", "test text_only", "image-only clients",
            "text-only clients", "multimodal clients"] + [f"recall {c}" for c in recall]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for folder in args.folders:
        for line in rows(folder, recall):
            print(line)


if __name__ == "__main__":
    main()
