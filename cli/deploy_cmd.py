"""``fedmm deploy``: certificates, SuperNode keys and the Flower processes of a real deployment.

TLS is the default: ``superlink``, ``supernode`` and ``start`` refuse to run
without certificates unless ``--insecure`` is given explicitly.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fedmm.cli.errors import new_app, usage_error, usage_errors
from fedmm.deploy.nodes import ISOLATIONS, HospitalNode, clientapp_argv, supervise
from fedmm.deploy.processes import (FLOWER_APP_NAME, check_reachable, executable, flower_env, flwr_run_argv,
                                    superlink_argv, supernode_argv, write_flwr_config)

app = new_app(help="Real deployment with Flower: TLS certificates, SuperNode keys, processes")
console = Console(soft_wrap=True)
Insecure = Annotated[bool, typer.Option("--insecure", help="Plain text, no TLS (tests on one machine only)")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the command instead of running it")]


def _run(argv: list[str], dry_run: bool, env: dict | None = None, replace: bool = True) -> None:
    if dry_run:
        console.print(shlex.join(argv), highlight=False, soft_wrap=True)
        return
    env = env or flower_env()
    if replace:
        os.execve(argv[0], argv, env)  # the Flower process replaces this one (signals reach it directly)
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for line in proc.stdout:  # relayed line by line (flwr run --stream runs for the whole federation)
            typer.echo(line, nl=False)
    raise typer.Exit(code=proc.returncode)


def _guard(build):
    """``build()``; a bad certificate, key or address (ValueError, FileNotFoundError) is a usage error."""
    with usage_errors(ValueError, FileNotFoundError):
        return build()


@app.command("certs")
def certs(
    out: Annotated[Path, typer.Argument(help="Folder for ca.crt, ca.key, server.pem, server.key")],
    host: Annotated[Optional[list[str]], typer.Option(
        "--host", help="Name or IP address the SuperLink is reached at (repeatable)")] = None,
    days: Annotated[int, typer.Option(min=1, help="Validity in days")] = 365,
    overwrite: Annotated[bool, typer.Option(help="Replace existing files")] = False,
) -> None:
    """Generate a CA and a SuperLink server certificate signed by it."""
    from fedmm.deploy.certs import make_certs  # needs the deployment extra (cryptography)

    hosts = host or ["127.0.0.1", "localhost"]
    paths = make_certs(out, hosts, days, overwrite)   # FileExistsError, ValueError: fedmm.cli.errors, exit 1
    console.print(f"CA {paths['ca.crt']} (give it to every hospital; keep ca.key offline), server certificate "
                  f"{paths['server.pem']} for {', '.join(hosts)}", highlight=False)


@app.command("node-key")
def node_key(
    path: Annotated[Path, typer.Argument(help="Private key file to write (PATH.pub gets the public key)")],
    overwrite: Annotated[bool, typer.Option(help="Replace existing files")] = False,
) -> None:
    """Generate a SuperNode authentication key pair (ECDSA P-384, OpenSSH format)."""
    from fedmm.deploy.certs import make_node_key  # needs the deployment extra (cryptography)

    private, public = make_node_key(path, overwrite)   # FileExistsError: fedmm.cli.errors, exit 1
    console.print(f"private key {private} (stays at the hospital), public key {public} (register it on the "
                  "SuperLink: flwr supernode register)", highlight=False)


@app.command("superlink")
def superlink(
    certs_dir: Annotated[Optional[Path], typer.Option("--certs", help="Folder made by 'fedmm deploy certs'")] = None,
    insecure: Insecure = False,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port (Fleet, Control and runtime APIs)")] = 8000,
    database: Annotated[Optional[Path], typer.Option(help="Keep SuperLink state in this file")] = None,
    supernode_auth: Annotated[bool, typer.Option(
        "--supernode-auth", help="Accept only registered SuperNodes")] = False,
    dry_run: DryRun = False,
) -> None:
    """Start the coordinator's SuperLink (TLS unless --insecure)."""
    _run(_guard(lambda: superlink_argv(certs_dir, insecure, host, port, database, supernode_auth)), dry_run)


@app.command("supernode")
def supernode(
    client_dir: Annotated[Path, typer.Option("--client-dir", help="This hospital's client folder")],
    superlink_address: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the SuperLink")],
    ca: Annotated[Optional[Path], typer.Option("--ca", help="ca.crt from the coordinator")] = None,
    insecure: Insecure = False,
    shared: Annotated[Optional[Path], typer.Option(
        "--shared-dir", help="Distributed global_vectors folder (default: CLIENT_DIR/../server/global_vectors)")] = None,
    port: Annotated[int, typer.Option(help="Local port of this SuperNode's runtime API")] = 9094,
    auth_key: Annotated[Optional[Path], typer.Option("--auth-key", help="Private key from 'fedmm deploy node-key'")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch")] = None,
    isolation: Annotated[str, typer.Option(
        help="process: one long-lived ClientApp process beside the SuperNode (PyTorch imported once, the "
             "data kept encoded); subprocess: Flower's own, a new ClientApp process per message")] = "process",
    log_dir: Annotated[Optional[Path], typer.Option(
        "--log-dir", help="With --isolation process: write supernode_<name>.log and clientapp_<name>.log "
                          "here instead of to this terminal")] = None,
    dry_run: DryRun = False,
) -> None:
    """Start one hospital's SuperNode (TLS unless --insecure), told its client folder via --node-config,
    and (default) its long-lived ClientApp process; runs until Ctrl-C / SIGTERM stops both."""
    if not (client_dir / "train").is_dir():
        raise usage_error(f"--client-dir {client_dir}: no train/ folder; give a client folder made by "
                          "'fedmm data partition'")
    if isolation not in ISOLATIONS:
        raise usage_error(f"--isolation {isolation!r}: choose from {', '.join(ISOLATIONS)}")
    node = dict(superlink=superlink_address, client_dir=client_dir, ca=ca, insecure=insecure, shared_dir=shared,
                auth_key=auth_key, device=device, threads=threads)
    argv = _guard(lambda: supernode_argv(host="127.0.0.1", port=port, isolation=isolation, **node))
    if isolation == "subprocess":
        _run(argv, dry_run)
        return
    if dry_run:
        console.print(shlex.join([*argv, "--superexec-auth-secret-file", "SECRET"]), highlight=False, soft_wrap=True)
        console.print(shlex.join(clientapp_argv(port, Path("SECRET"))) + " --supernode-pid PID", highlight=False,
                      soft_wrap=True)
        return
    secret_dir = Path(tempfile.mkdtemp(prefix="fedmm-node-"))   # owner-only folder for the shared secret
    try:
        hospital = _guard(lambda: HospitalNode(client_dir.resolve().name, port, log_dir, secret_dir, flower_env(),
                                               "process", **node))
        console.print(f"SuperNode (pid {hospital.supernode.pid}) and ClientApp process (pid "
                      f"{hospital.clientapp.pid}) started{'; logs in ' + str(log_dir) if log_dir else ''}; "
                      "Ctrl-C stops both", highlight=False)
        code = supervise(hospital)
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
    raise typer.Exit(code=code)


@app.command("start")
def start(
    root: Annotated[Path, typer.Option("--root", help="CLIENT_ROOT prepared with 'fedmm server init'")],
    superlink_address: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the SuperLink")],
    ca: Annotated[Optional[Path], typer.Option("--ca", help="ca.crt")] = None,
    insecure: Insecure = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints; start at round 0")] = False,
    round_timeout: Annotated[float, typer.Option(help="Seconds to wait for replies in a round")] = 600.0,
    node_wait: Annotated[float, typer.Option(help="Seconds to wait for every SuperNode at a round's start")] = 120.0,
    dry_run: DryRun = False,
) -> None:
    """Submit the fedmm Flower app to the SuperLink (flwr run); rounds continue from the latest checkpoint."""
    server_dir = (root / "server").resolve()
    if not (server_dir / "config.toml").exists() and not dry_run:
        raise usage_error(f"--root {root}: no server/config.toml (run 'fedmm server init' first)")
    home = server_dir / "flwr_home"
    _guard(lambda: write_flwr_config(home, superlink_address, ca, insecure))
    if not dry_run:
        check_reachable(superlink_address)   # ConnectionError: fedmm.cli.errors, exit 1
    argv = flwr_run_argv({"server-dir": str(server_dir), "resume": not fresh, "round-timeout": round_timeout,
                          "node-wait": node_wait})
    _run(argv, dry_run, env=flower_env(FLWR_HOME=str(home)), replace=False)


@app.command("register")
def register(
    public_key: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                               help="A hospital's PATH.pub from 'fedmm deploy node-key'")],
    root: Annotated[Path, typer.Option("--root", help="CLIENT_ROOT of the coordinator")],
    superlink_address: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the SuperLink")],
    ca: Annotated[Optional[Path], typer.Option("--ca", help="ca.crt")] = None,
    insecure: Insecure = False,
    dry_run: DryRun = False,
) -> None:
    """Register a SuperNode's public key on a SuperLink started with --supernode-auth."""
    home = (root / "server").resolve() / "flwr_home"
    _guard(lambda: write_flwr_config(home, superlink_address, ca, insecure))
    if not dry_run:
        check_reachable(superlink_address)
    argv = _guard(lambda: [executable("flwr"), "supernode", "register", str(public_key.resolve()), FLOWER_APP_NAME])
    _run(argv, dry_run, env=flower_env(FLWR_HOME=str(home)), replace=False)
