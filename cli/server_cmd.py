"""``fedmm server``: the coordinator's steps of the file exchange (and the setup Flower reuses)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from fedmm.cli.errors import new_app, print_error, reason
from fedmm.cli.preflight import load_cli_config
from fedmm.engines.files import aggregate as aggregate_round
from fedmm.engines.files import init_server, server_context, uploads_dir
from fedmm.engines.transport import RoundFailed
from fedmm.federated.messages import MessageError

app = new_app(help="The coordinator's steps of the file exchange")
console = Console(soft_wrap=True)
Root = Annotated[Path, typer.Option("--root", help="CLIENT_ROOT (the server uses CLIENT_ROOT/server/)")]


class ConsoleReporter:
    def start_round(self, *a) -> None: ...
    def client_done(self, *a) -> None: ...

    def end_round(self, r: int, info: dict) -> None:
        console.print(f"round {r + 1} aggregated: {info.get('n_uploads', '?')} uploads, "
                      f"mean val macro-F1 {info['val_macro_f1_mean']:.3f}", highlight=False)

    def message(self, text: str) -> None:
        console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)


def _fail(exc: Exception, code: int = 1) -> None:
    print_error(reason(exc))
    raise typer.Exit(code=code) from exc


@app.command("init")
def init(
    root: Root,
    config: Annotated[Optional[Path], typer.Option("--config", exists=True, dir_okay=False, help="TOML config")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("-c", help="Override: section.key=value")] = None,
    preset: Annotated[str, typer.Option(help="default | smoke | scale")] = "default",
    rounds: Annotated[Optional[int], typer.Option(help="Federated rounds")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="fedmm | fedavg | fedprox | local")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed")] = None,
    min_clients: Annotated[Optional[int], typer.Option(help="A round needs at least this many valid uploads")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start a new federation over an existing one")] = False,
) -> None:
    """Publish config, federation facts, public set, tokenizer and the round-0 global state."""
    cfg = load_cli_config(config, overrides or [], preset, {"fed.rounds": rounds, "fed.strategy": strategy,
                                                            "seed": seed, "fed.min_clients": min_clients},
                          runs_here=False)   # the device is the clients' (cfg.device may be cuda there)
    ctx = init_server(root, cfg, overwrite, ConsoleReporter())   # data/file problems: fedmm.cli.errors
    console.print(f"federation of {len(ctx.info.clients)} clients, {cfg.fed.rounds} rounds, strategy "
                  f"{cfg.fed.strategy}; published {root / 'server' / 'global_vectors'}", highlight=False)


@app.command("aggregate")
def aggregate(
    root: Root,
    min_clients: Annotated[Optional[int], typer.Option(
        help="A round needs at least this many valid uploads (default: fed.min_clients of the config)")] = None,
) -> None:
    """Server step on this round's valid uploads; publish the new global state (bad uploads are left out)."""
    try:
        state, _ = aggregate_round(root, ConsoleReporter(), min_clients)
    except RoundFailed as exc:
        _fail(exc)
    except (FileNotFoundError, MessageError) as exc:
        _fail(exc)
    console.print(f"published global state after round {state.round}", highlight=False)


@app.command("status")
def status(root: Root) -> None:
    """Rounds done and which clients have uploaded for the current round."""
    try:
        ctx = server_context(root)
        state, _ = ctx.latest()
    except (FileNotFoundError, MessageError) as exc:
        _fail(exc)
    folder = uploads_dir(root, state.round)
    have = [c for c in ctx.info.clients if (folder / f"{c}.json").exists()]
    console.print(f"{state.round} of {ctx.cfg.fed.rounds} rounds done; round {state.round + 1}: "
                  f"{len(have)}/{len(ctx.info.clients)} uploads "
                  f"(missing: {', '.join(c for c in ctx.info.clients if c not in have) or 'none'})", highlight=False)
