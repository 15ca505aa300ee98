"""A whole Flower federation on one machine: a SuperLink and one SuperNode per client on 127.0.0.1
(TLS with a fresh CA by default), then ``flwr run``. Used by ``fedmm run --transport flower`` and tests.

Each SuperNode runs with ``--isolation process`` beside a long-lived ClientApp process
(:mod:`fedmm.engines.flower.worker`) that keeps PyTorch imported and the client's
data encoded across rounds (``isolation="subprocess"``: Flower's own fresh process
per message). Every process runs in its own process group, is bounded in time and
is stopped (SIGTERM, then SIGKILL) when the federation closes, whatever happened.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import torch

from fedmm.deploy.certs import make_certs
from fedmm.deploy.nodes import HospitalNode
from fedmm.deploy.pids import terminate_with_parent
from fedmm.deploy.processes import (ManagedProcess, flower_env, flwr_run_argv, free_port, superlink_argv,
                                    wait_for_port, write_flwr_config)
from fedmm.engines.store import ClientStateStore
from fedmm.engines.workers import plan_workers
from fedmm.engines.files import link_simulation_root, publish_static, shared_dir
from fedmm.engines.flower import STATUS_FILE
from fedmm.engines.transport import TransportError
from fedmm.io import read_json


# Busy poll of a simulation's SuperNodes and ClientApps (s). Every poll costs the SuperLink and the
# SuperNodes CPU that the clients' training shares on one machine: with 0.25 s / 0.2 s they used
# 42 CPU s in a 4-client, 3-round run, with 0.5 s / 0.5 s 28-31 (benchmarks/README.md, round time).
SIM_NODE_POLL_S = 0.5
SIM_APP_POLL_S = 0.5


class FlowerRunFailed(TransportError):
    """``flwr run`` did not finish the rounds (reason and log locations in the message)."""


class LocalFlowerFederation:
    """SuperLink + SuperNodes on loopback; ``run_app`` submits the fedmm app with ``flwr run``.

    ``isolation``: ``process`` (each SuperNode with its long-lived ClientApp process) or
    ``subprocess`` (Flower's new process per message). ``node_poll``: seconds between the
    SuperNodes' requests for messages while busy (default: 0.5 s for up to 10 nodes, 0.05 s per
    node beyond that, Flower's 3 s from 60 nodes on; 3 or more: the stock ``flower-supernode``).
    Every process gets SIGTERM if the thread that started them ends."""

    def __init__(self, work_dir: Path, client_dirs: dict[str, Path], shared: Path, insecure: bool = False,
                 device: str | None = None, threads: int | None = None, reporter=None,
                 isolation: str = "process", node_poll: float | None = None) -> None:
        self.work, self.client_dirs, self.shared = Path(work_dir), dict(client_dirs), Path(shared)
        self.insecure, self.device, self.threads, self.reporter = insecure, device, threads, reporter
        self.isolation = isolation
        self.node_poll = node_poll if node_poll is not None else min(3.0, max(SIM_NODE_POLL_S, 0.05 * len(self.client_dirs)))
        self.superlink: ManagedProcess | None = None
        self.supernodes: dict[str, HospitalNode] = {}
        self.env = flower_env(FLWR_HOME=str(self.work / "flwr_home"))
        self.address = ""

    def _say(self, text: str) -> None:
        if self.reporter is not None:
            self.reporter.message(text)

    def start(self, timeout: float = 60.0) -> "LocalFlowerFederation":
        certs = None if self.insecure else self.work / "certs"
        if certs is not None:
            make_certs(certs, ["127.0.0.1", "localhost"], days=2, overwrite=True)
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        logs = self.work / "logs"
        self.superlink = ManagedProcess("superlink", superlink_argv(certs, self.insecure, "127.0.0.1", port),
                                        logs / "superlink.log", self.env, die_with_parent=True)
        wait_for_port("127.0.0.1", port, timeout, self.superlink.proc)
        ca = None if certs is None else certs / "ca.crt"
        for name, client_dir in self.client_dirs.items():
            self.supernodes[name] = HospitalNode(
                name, free_port(), logs, self.work, self.env, self.isolation, node_poll=self.node_poll,
                poll=SIM_APP_POLL_S,
                superlink=self.address, client_dir=client_dir, ca=ca, insecure=self.insecure, shared_dir=self.shared,
                device=self.device, threads=self.threads)
        write_flwr_config(self.work / "flwr_home", self.address, ca, self.insecure)
        self._say(f"Flower: SuperLink {self.address} ({'insecure' if self.insecure else 'TLS'}), "
                  f"{len(self.supernodes)} SuperNodes ({self.isolation} isolation); logs in {logs}")
        return self

    def run_app(self, server_dir: Path, resume: bool, timeout: float, round_timeout: float = 600.0,
                node_wait: float = 120.0, in_flight: int = 0) -> dict:
        """Submit the app and wait (at most ``timeout`` s); returns the ServerApp's status record.
        ``in_flight``: TRAIN messages out at once (0 = all; server_app.py)."""
        status_path = Path(server_dir) / STATUS_FILE
        status_path.unlink(missing_ok=True)
        argv = flwr_run_argv({"server-dir": os.path.abspath(server_dir), "resume": bool(resume),
                              "round-timeout": float(round_timeout), "node-wait": float(node_wait),
                              "in-flight": int(in_flight)})
        log_path = self.work / "logs" / "flwr_run.log"
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, start_new_session=True, text=True, errors="replace",
                                preexec_fn=terminate_with_parent())
        relay = threading.Thread(target=self._relay, args=(proc, log_path), daemon=True)
        relay.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            raise FlowerRunFailed(f"flwr run did not finish within {timeout:.0f} s; logs in {log_path.parent}")
        finally:
            relay.join(timeout=10)
        if not status_path.exists():  # flwr run returns when the run ends; the status file is written just before
            deadline = time.time() + 10
            while not status_path.exists() and time.time() < deadline:
                time.sleep(0.5)
        status = read_json(status_path) if status_path.exists() else {"status": "unknown"}
        if status.get("status") != "done":
            raise FlowerRunFailed(f"Flower run ended with status {status.get('status')!r}"
                                  f"{': ' + status['reason'] if status.get('reason') else ''} "
                                  f"(flwr run exit code {proc.returncode}); logs in {log_path.parent}")
        return status

    def _relay(self, proc: subprocess.Popen, log_path: Path) -> None:
        """Copy ``flwr run`` output to its log; pass fedmm's progress lines to the reporter."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if "[fedmm]" in line:
                    self._say(line.split("[fedmm]", 1)[1].strip())

    def stop(self) -> None:
        for proc in list(self.supernodes.values()) + ([self.superlink] if self.superlink else []):
            proc.stop()

    def __enter__(self) -> "LocalFlowerFederation":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def simulation_in_flight(workers: int, n_clients: int) -> int:
    """Clients training at once in a simulation on this machine: the in-process engine's number of
    CPU worker processes for ``workers`` (:func:`plan_workers`); 0 (every client at once) when that
    is all of them."""
    n, _ = plan_workers(workers, 1, torch.device("cpu"), n_clients)
    return 0 if n >= n_clients else n


def run_flower_simulation(ctx, fed, resume: bool, timeout: float, round_timeout: float = 600.0,
                          insecure: bool = False, isolation: str = "process") -> dict[str, ClientStateStore]:
    """Run ``ctx``'s rounds over real Flower processes; returns where each client's state lives.
    ``isolation``: ``process`` (long-lived ClientApp processes, fast SuperNode poll) or
    ``subprocess`` (Flower's own: a new ClientApp process per message, stock SuperNodes).
    As many clients train at once as ``workers`` says (0 = one per core; :func:`simulation_in_flight`).

    The run directory gets a CLIENT_ROOT (``client_root/``, linked to the prepared data)
    whose client folders the SuperNodes are told with ``--node-config``; the
    ServerApp reads ``config.toml`` and ``federation.json`` from the run directory
    and writes its checkpoints and metrics there.
    """
    cfg = ctx.cfg
    root = link_simulation_root(fed, cfg, ctx.run_dir / "client_root")
    tok_dir = Path(cfg.data.tokenizer) if cfg.data.tokenizer else root / "tokenizer"
    publish_static(shared_dir(root), cfg, ctx.info, root / "public", tok_dir)
    ctx.info.save(ctx.run_dir / "federation.json")
    clients = {name: root / name for name in ctx.info.clients}
    started = time.time()
    stock = isolation == "subprocess"
    with LocalFlowerFederation(ctx.run_dir / "flower", clients, shared_dir(root), insecure=insecure,
                               device=None, threads=cfg.threads or None, reporter=ctx.reporter, isolation=isolation,
                               node_poll=3.0 if stock else None) as flower:
        flower.run_app(ctx.run_dir, resume, max(1.0, timeout - (time.time() - started)), round_timeout,
                       in_flight=simulation_in_flight(cfg.workers, len(clients)))
    return {name: ClientStateStore(path / "state") for name, path in clients.items()}
