"""The ``fedmm`` command: one Typer app, one module per command group.

Errors are reported by :mod:`fedmm.cli.errors` (short message, exit code 2 for usage
errors, 1 for other expected failures; ``--debug`` or ``FEDMM_DEBUG=1`` for tracebacks).
"""
from __future__ import annotations

import logging

import typer

from fedmm.cli.client_cmd import all_app as clients_app
from fedmm.cli.client_cmd import app as client_app
from fedmm.cli.deploy_cmd import app as deploy_app
from fedmm.cli.errors import new_app
from fedmm.cli.predict_cmd import predict
from fedmm.cli.report_cmd import report
from fedmm.cli.run_cmd import run, sweep
from fedmm.cli.server_cmd import app as server_app

app = new_app(name="fedmm", help="fedmm: federated multimodal (image + text) learning with missing modalities.",
              add_completion=False)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="On an error show the full traceback "
                                     "(accepted anywhere on the command line; or set FEDMM_DEBUG=1)")) -> None:
    """fedmm: federated multimodal (image + text) learning with missing modalities."""
    # --debug is taken off the command line by fedmm.cli.errors.FedmmGroup.main; declared here for --help


app.command("run")(run)
app.command("sweep")(sweep)
app.command("predict")(predict)
app.command("report")(report)

try:  # the data command group lives in its own module
    from fedmm.cli.data_cmd import app as data_app

    app.add_typer(data_app, name="data")
except ImportError:  # pragma: no cover - only while the module is absent
    pass

app.add_typer(client_app, name="client")
app.add_typer(clients_app, name="clients")
app.add_typer(server_app, name="server")
app.add_typer(deploy_app, name="deploy")


def main() -> None:
    """Entry point of the ``fedmm`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
