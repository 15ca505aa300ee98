"""``fedmm data``: generate the synthcxr benchmark, import real layouts, partition datasets into clients."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer
from rich.console import Console
from rich.table import Table

from fedmm.cli.errors import new_app, usage_errors
from fedmm.cli.import_cmd import app as import_app
from fedmm.data.manifest import ManifestError, load_manifest
from fedmm.data.partition import MODES, PartitionConfig, partition_dataset
from fedmm.data.synth import SYNTH_CLASSES, SynthConfig, generate_synthcxr
from fedmm.data.tokenizer import train_wordpiece

app = new_app(help="Dataset tools")
app.add_typer(import_app, name="import")
console = Console()
MAX_ISSUES_SHOWN = 20


def _print_issues(issues: list[str]) -> None:
    if not issues:
        return
    console.print(f"[yellow]{len(issues)} loader issue(s)[/yellow]")
    for line in issues[:MAX_ISSUES_SHOWN]:
        console.print(f"  {line}", markup=False, highlight=False)
    if len(issues) > MAX_ISSUES_SHOWN:
        console.print(f"  ... and {len(issues) - MAX_ISSUES_SHOWN} more")


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder")],
    n_samples: Annotated[int, typer.Option("--n-samples", min=1, help="Number of samples")] = 9000,
    image_size: Annotated[int, typer.Option("--image-size", min=16, help="Image side in pixels")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed")] = 0,
) -> None:
    """Generate the synthcxr benchmark (images + reports + manifest.csv)."""
    cfg = SynthConfig(n_samples=n_samples, image_size=image_size, seed=seed)
    with console.status(f"generating {n_samples} samples"):
        folder = generate_synthcxr(out, cfg)
    data = load_manifest(folder, verify_images=False)
    table = Table(title=f"synthcxr -> {folder}")
    for col in ("class", "train", "test"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name in SYNTH_CLASSES:
        rows = [r for r in data.records if r.labels == (name,)]
        table.add_row(name, str(sum(r.split == "train" for r in rows)), str(sum(r.split == "test" for r in rows)))
    console.print(table)
    _print_issues([str(i) for i in data.issues])


@app.command()
def partition(
    src: Annotated[Path, typer.Argument(help="Source dataset folder (with manifest.csv)")],
    out: Annotated[Path, typer.Option("--out", help="CLIENT_ROOT to create")],
    mode: Annotated[str, typer.Option("--mode", help=f"Missing-modality mode: {' | '.join(MODES)}")] = "structural",
    clients: Annotated[int, typer.Option("--clients", min=1, help="Number of clients (not site mode)")] = 30,
    image_only: Annotated[int, typer.Option("--image-only", min=0, help="Image-only clients (structural)")] = 2,
    text_only: Annotated[int, typer.Option("--text-only", min=0, help="Text-only clients (structural)")] = 2,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Dirichlet label skew (omit = IID)")] = None,
    public_size: Annotated[int, typer.Option("--public-size", min=0, help="Public (unlabelled) set size")] = 500,
    p_drop: Annotated[float, typer.Option("--p-drop", help="Client mode: per-modality drop probability")] = 0.3,
    sample_missing: Annotated[Tuple[float, float, float], typer.Option(
        "--sample-missing", help="Sample mode: fractions losing image, text, both")] = (0.2, 0.2, 0.05),
    min_train: Annotated[int, typer.Option("--min-train", min=0, help="Minimum training rows per client")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Random seed")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing partition")] = False,
) -> None:
    """Split a dataset folder into CLIENT_ROOT/client_<k>/{train,val}, public/, test/."""
    cfg = PartitionConfig(n_clients=clients, mode=mode, n_image_only=image_only, n_text_only=text_only,
                          p_drop_modality=p_drop, sample_missing=tuple(sample_missing), dirichlet_alpha=alpha, public_size=public_size,
                          min_train_per_client=min_train, seed=seed)
    with usage_errors(ValueError, prefix="partition options: "):
        cfg.validate()
    summary = partition_dataset(src, out, cfg, overwrite=overwrite)   # data problems: fedmm.cli.errors, exit 1
    table = Table(title=f"{len(summary['clients'])} clients -> {out}")
    for col in ("client", "modality", "n_train", "n_val"):
        table.add_column(col, justify="left" if col in ("client", "modality") else "right")
    for c in summary["clients"]:
        table.add_row(c["name"], c["modality"], str(c["n_train"]), str(c["n_val"]))
    console.print(table)
    console.print(f"public: {summary['n_public']}  test: {summary['n_test']}  classes: {', '.join(summary['classes'])}")
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    _print_issues(summary["source_issues"])


@app.command()
def tokenizer(
    src: Annotated[Path, typer.Argument(help="Dataset folder whose report texts to learn from (e.g. public/)")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write vocab.txt into")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", min=16, help="Maximum vocabulary size")] = 2000,
) -> None:
    """Train the offline BERT WordPiece vocabulary from a dataset folder's texts."""
    data = load_manifest(src, require_labels=False, verify_images=False)   # ManifestError: fedmm.cli.errors
    texts = [r.text for r in data.records if r.text]
    if not texts:
        raise ManifestError(f"{src / 'manifest.csv'}: no report text to learn a vocabulary from")
    path = train_wordpiece(texts, out, vocab_size=vocab_size)
    n = len(path.read_text(encoding="utf-8").splitlines())
    console.print(f"{n} tokens from {len(texts)} texts -> {path}", highlight=False)
    _print_issues([str(i) for i in data.issues])
