"""One hospital's Flower processes: the SuperNode and, with ``--isolation process``, the long-lived
ClientApp process that runs its tasks (:mod:`fedmm.engines.flower.worker`).

The SuperNode's Runtime API listens on 127.0.0.1 only; the ClientApp process
proves itself with a random shared secret (``--superexec-auth-secret-file``,
owner-readable only), so another local user cannot claim the hospital's tasks.
Both processes are started together, watched together and stopped together.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

from fedmm.deploy.processes import ManagedProcess, supernode_argv

ISOLATIONS = ("process", "subprocess")
STOCK_POLL_S = 3.0   # flower-supernode's own idle poll (flwr 1.42)


def write_secret(path: Path) -> Path:
    """A fresh 32-byte secret in ``path``, created readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    return path


def clientapp_argv(runtime_port: int, secret_file: Path | None = None, supernode_pid: int | None = None,
                   poll: float = 0.2) -> list[str]:
    """The long-lived ClientApp process for the SuperNode whose Runtime API is 127.0.0.1:``runtime_port``."""
    argv = [sys.executable, "-P", "-m", "fedmm.engines.flower.worker", "--runtime-api-address",
            f"127.0.0.1:{int(runtime_port)}", "--poll", repr(float(poll))]
    if secret_file is not None:
        argv += ["--superexec-auth-secret-file", str(secret_file)]
    if supernode_pid is not None:
        argv += ["--supernode-pid", str(int(supernode_pid))]
    return argv


class HospitalNode:
    """A SuperNode and (``isolation="process"``) its ClientApp process, each in its own process group.

    ``node_kwargs`` go to :func:`~fedmm.deploy.processes.supernode_argv` (superlink, client_dir, ca,
    insecure, shared_dir, auth_key, device, threads); the Runtime API is 127.0.0.1:``port``. Logs:
    ``log_dir/supernode_<name>.log`` and ``log_dir/clientapp_<name>.log`` (``log_dir=None``: this
    process's output); the shared secret lives in ``secret_dir`` while the node runs. ``node_poll``
    (seconds, under 3): start the SuperNode through :mod:`fedmm.engines.flower.supernode`, its idle poll
    capped at that (None or >= 3: the stock ``flower-supernode``, which polls every 3 s).
    """

    def __init__(self, name: str, port: int, log_dir: Path | None, secret_dir: Path, env: dict | None = None,
                 isolation: str = "process", poll: float = 0.2, node_poll: float | None = None,
                 **node_kwargs) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation: one of {ISOLATIONS}, not {isolation!r}")
        self.name, self.port, self.isolation = name, int(port), isolation
        argv = supernode_argv(host="127.0.0.1", port=self.port, isolation=isolation, **node_kwargs)
        if node_poll is not None and node_poll < STOCK_POLL_S:
            argv = [sys.executable, "-P", "-m", "fedmm.engines.flower.supernode", "--poll", repr(float(node_poll)), "--",
                    *argv[1:]]
        self.secret = write_secret(Path(secret_dir) / f".{name}.secret") if isolation == "process" else None
        if self.secret is not None:
            argv += ["--superexec-auth-secret-file", str(self.secret)]

        def log(kind: str) -> Path | None:
            return None if log_dir is None else Path(log_dir) / f"{kind}_{name}.log"

        self.clientapp: ManagedProcess | None = None
        self.supernode = ManagedProcess(f"supernode {name}", argv, log("supernode"), env, die_with_parent=True)
        try:
            if isolation == "process":
                self.clientapp = ManagedProcess(f"clientapp {name}",
                                                clientapp_argv(self.port, self.secret, self.supernode.pid, poll),
                                                log("clientapp"), env, die_with_parent=True)
        except BaseException:
            self.stop()
            raise

    @property
    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.clientapp, self.supernode) if p is not None]

    def running(self) -> bool:
        """Whether every process of this node still runs."""
        return all(p.running() for p in self.processes)

    def kill(self) -> None:
        """Immediate stop of the whole node, as a crash of its machine would."""
        for p in self.processes:
            p.kill()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the ClientApp process, then the SuperNode (SIGTERM, SIGKILL after ``timeout`` s); removes
        the secret."""
        try:
            for p in self.processes:
                p.stop(timeout)
        finally:
            if self.secret is not None:
                self.secret.unlink(missing_ok=True)

    def tail(self, n: int = 30) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(n)}" for p in self.processes)


def supervise(node: HospitalNode, poll: float = 1.0) -> int:
    """Run until SIGTERM/SIGINT or until one of ``node``'s processes exits; then stop them all.
    Returns the exit status of the process that ended first (128 + N if signal N ended it; 0 after a
    signal to this process)."""
    stop = {"signal": 0}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop["signal"] and node.running():
            time.sleep(poll)
        ended = [p for p in node.processes if not p.running()]
        code = 0 if stop["signal"] or not ended else ended[0].proc.returncode
        code = 128 - code if code < 0 else code
        if ended and not stop["signal"]:
            print(f"{ended[0].name} exited with code {code}; stopping the others. Last lines:\n"
                  f"{ended[0].tail(20)}", file=sys.stderr)
        return code
    finally:
        node.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
