"""The ``fedmm`` command: one Typer app, one module per command group."""
from __future__ import annotations

import logging

import typer

from fedmm.cli.run_cmd import run, sweep

app = typer.Typer(help="fedmm: federated multimodal (image + text) learning with missing modalities.",
                  no_args_is_help=True, add_completion=False)
app.command("run")(run)
app.command("sweep")(sweep)

try:  # the data command group lives in its own module
    from fedmm.cli.data_cmd import app as data_app

    app.add_typer(data_app, name="data")
except ImportError:  # pragma: no cover - only while the module is absent
    pass


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
