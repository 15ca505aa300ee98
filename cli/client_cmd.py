"""``fedmm client`` (one hospital's steps of the file exchange) and ``fedmm clients`` (all, on one machine)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from fedmm.cli.errors import new_app, print_error, reason
from fedmm.engines.files import shared_dir, train_client, update_client
from fedmm.engines.transport import FederationInfo
from fedmm.federated.messages import MessageError

app = new_app(help="One hospital's steps of the file exchange (reads only its folder and server/global_vectors/)")
all_app = new_app(help="Run a step for every client of CLIENT_ROOT in turn (all sites on one machine)")
console = Console(soft_wrap=True)

ClientDir = Annotated[Path, typer.Option("--client-dir", help="The client folder, e.g. CLIENT_ROOT/client_3")]
SharedDir = Annotated[Optional[Path], typer.Option(
    "--shared-dir", help="Folder the server publishes to (default: CLIENT_DIR/../server/global_vectors)")]
Device = Annotated[Optional[str], typer.Option(help="cpu | cuda | auto (default: the published config's)")]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: the published config's)")]
STEP_ERRORS = (MessageError, FileNotFoundError, ValueError, RuntimeError)


def _fail(exc: Exception) -> None:
    print_error(reason(exc))
    raise typer.Exit(code=1) from exc


@app.command("train")
def train(client_dir: ClientDir, shared: SharedDir = None,
          upload_dir: Annotated[Optional[Path], typer.Option(
              "--upload-dir", help="Where uploads go (default: CLIENT_DIR/../server/uploads); "
                                   "for air-gapped sites, a folder to carry to the coordinator")] = None,
          device: Device = None, threads: Threads = None) -> None:
    """Train on the published global state; write this round's upload (safetensors + JSON)."""
    try:
        stem = train_client(client_dir, shared, upload_dir, device, threads)
    except STEP_ERRORS as exc:
        _fail(exc)
    console.print(f"upload written: {stem}.safetensors / .json", highlight=False)


@app.command("update")
def update(client_dir: ClientDir, shared: SharedDir = None, device: Device = None, threads: Threads = None) -> None:
    """Take in the published global state: own encoders + global shared part -> best_model.safetensors."""
    try:
        report = update_client(client_dir, shared, device, threads)
    except STEP_ERRORS as exc:
        _fail(exc)
    console.print(f"{report['client']}: best_model.safetensors after round {report['global_round']}, "
                  f"val macro-F1 {report['val_macro_f1']:.3f}", highlight=False)


def _clients(root: Path) -> list[str]:
    try:
        return FederationInfo.load(shared_dir(root) / "federation.json").clients
    except (FileNotFoundError, MessageError) as exc:
        _fail(exc)


Root = Annotated[Path, typer.Option("--root", help="CLIENT_ROOT (with server/global_vectors/ published)")]


@all_app.command("train-all")
def train_all(root: Root, device: Device = None, threads: Threads = None) -> None:
    """``fedmm client train`` for every client of the federation, one after another."""
    failed = []
    for name in _clients(root):
        try:
            stem = train_client(root / name, device=device, threads=threads)
            console.print(f"{name}: upload written to {stem}.safetensors / .json", highlight=False)
        except STEP_ERRORS as exc:
            failed.append(name)
            console.print(f"[yellow]{name}: failed:[/yellow] {escape(reason(exc))}", highlight=False)
    if failed:
        console.print(f"{len(failed)} client(s) failed: {', '.join(failed)}", highlight=False)
        raise typer.Exit(code=1)


@all_app.command("update-all")
def update_all(root: Root, device: Device = None, threads: Threads = None) -> None:
    """``fedmm client update`` for every client of the federation."""
    failed = []
    for name in _clients(root):
        try:
            report = update_client(root / name, device=device, threads=threads)
            console.print(f"{name}: val macro-F1 {report['val_macro_f1']:.3f}", highlight=False)
        except STEP_ERRORS as exc:
            failed.append(name)
            console.print(f"[yellow]{name}: failed:[/yellow] {escape(reason(exc))}", highlight=False)
    if failed:
        raise typer.Exit(code=1)
