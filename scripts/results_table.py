"""Markdown tables of sweep results: macro-F1 x100 (mean ± std over seeds) per scenario and
client type, and the recall of chosen classes.

    python scripts/results_table.py runs/bench runs/bench-strict [--recall nodule,pneumothorax]

Each folder is a ``fedmm sweep --out`` folder (or a run directory); its runs' summary.json
files are read (not sweep.json, so a partial sweep is tabulated too) and grouped by
strategy. The reading and grouping live in :mod:`fedmm.engines.compare` (also behind
``fedmm report``); this script only prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedmm.engines.compare import collect, markdown_table


def main() -> None:
    """Print the markdown table of the folders given on the command line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--recall", default="nodule,pneumothorax")
    args = ap.parse_args()
    recall = [c for c in args.recall.split(",") if c]
    try:
        groups = collect(args.folders)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    for line in markdown_table(groups, recall):
        print(line)


if __name__ == "__main__":
    main()
