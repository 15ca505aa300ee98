"""Command lines for the Flower processes of a deployment, and child-process handling.

TLS is the default everywhere: a command without certificates is refused unless
``insecure`` is asked for explicitly. The builders only assemble argument lists;
the CLI (``fedmm deploy ...``) and the local launcher run them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from fedmm.deploy.pids import process_alive, stat_fields, terminate_with_parent

FLOWER_APP_NAME = "fedmm"


def executable(name: str) -> str:
    """A console script of this environment (beside the running Python) or from PATH."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the deployment extra: pip install 'fedmm[deploy]'")
    return found


def flower_env(**extra: str) -> dict[str, str]:
    """This environment, with its console-script folder first on PATH (Flower processes start
    helpers such as ``flower-superexec`` by name) and Flower's usage telemetry off unless
    ``FLWR_TELEMETRY_ENABLED`` is set: a hospital's processes contact the SuperLink only."""
    env = {"FLWR_TELEMETRY_ENABLED": "0", **os.environ, **extra}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")]) if env.get("PATH") else bindir
    return env


def check_security(ca: Path | None, insecure: bool, what: str) -> None:
    """TLS unless ``insecure`` is explicit; never both."""
    if insecure and ca is not None:
        raise ValueError(f"{what}: choose TLS (certificates) or --insecure, not both")
    if not insecure and ca is None:
        raise ValueError(f"{what}: TLS is the default; give the certificates made by 'fedmm deploy certs' "
                         "or pass --insecure explicitly (plain text, for tests on one machine only)")
    if ca is not None:
        require_file(ca, what, "certificate", "the ca.crt made by 'fedmm deploy certs'")
        try:
            ssl.create_default_context(cafile=str(ca))
        except ssl.SSLError as exc:
            raise ValueError(f"{what}: {ca} is not a PEM certificate ({exc.reason or exc}); "
                             "give the ca.crt made by 'fedmm deploy certs'") from exc


def require_file(path: Path, what: str, kind: str, expected: str) -> None:
    """FileNotFoundError naming ``what`` needs and where it comes from unless ``path`` is a file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: {kind} {path} not found; give {expected}")


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; ValueError naming the address otherwise."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--superlink {address!r}: expected HOST:PORT, e.g. 10.0.0.5:8000")
    return host, int(port)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConnectionError unless something accepts TCP connections at the SuperLink ``address``."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionError(f"cannot reach the SuperLink at {address} ({why}); check --superlink and that "
                              "'fedmm deploy superlink' runs there") from exc


def format_config(values: dict) -> str:
    """``key='value' n=3 flag=true``: the format of ``--node-config`` and ``--run-config``."""
    parts = []
    for k, v in values.items():
        if isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            parts.append(f"{k}={v!r}")
        else:
            s = str(v)
            if "'" in s or "\n" in s:
                raise ValueError(f"{k}: value {s!r} may not contain quotes or newlines")
            parts.append(f"{k}='{s}'")
    return " ".join(parts)


def superlink_argv(certs_dir: Path | None, insecure: bool = False, host: str = "0.0.0.0", port: int = 8000,
                   database: Path | None = None, supernode_auth: bool = False) -> list[str]:
    """``flower-superlink`` serving Fleet, Control and runtime APIs on one port, app deps not installed."""
    ca = Path(certs_dir) / "ca.crt" if certs_dir is not None else None
    check_security(ca, insecure, "SuperLink")
    argv = [executable("flower-superlink"), "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]
    if insecure:
        argv.append("--insecure")
    else:
        for name in ("server.pem", "server.key"):
            require_file(Path(certs_dir) / name, "SuperLink", "server file", "the --certs folder made by "
                         "'fedmm deploy certs'")
        argv += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(Path(certs_dir) / "server.pem"),
                 "--ssl-keyfile", str(Path(certs_dir) / "server.key")]
    if database is not None:
        argv += ["--database", str(database)]
    if supernode_auth:
        argv.append("--enable-supernode-auth")
    return argv


def supernode_argv(superlink: str, client_dir: Path, ca: Path | None, insecure: bool = False,
                   shared_dir: Path | None = None, host: str = "127.0.0.1", port: int = 9094,
                   auth_key: Path | None = None, device: str | None = None, threads: int | None = None,
                   isolation: str = "subprocess") -> list[str]:
    """``flower-supernode`` for one hospital; its client folder goes in ``--node-config``.

    ``isolation="process"``: the SuperNode starts no ClientApp process itself; a long-lived one
    (:mod:`fedmm.deploy.nodes`) claims its tasks."""
    if isolation not in ("subprocess", "process"):
        raise ValueError(f"isolation: 'subprocess' or 'process', not {isolation!r}")
    check_security(ca, insecure, "SuperNode")
    parse_address(superlink)
    if auth_key is not None:
        require_file(auth_key, "SuperNode", "--auth-key", "the private key made by 'fedmm deploy node-key'")
    node = {"client-dir": os.path.abspath(client_dir)}
    if shared_dir is not None:
        node["shared-dir"] = os.path.abspath(shared_dir)
    if device:
        node["device"] = device
    if threads:
        node["threads"] = int(threads)
    argv = [executable("flower-supernode"), "--superlink", superlink, "--host", host, "--port", str(port),
            "--node-config", format_config(node)]
    argv += ["--insecure"] if insecure else ["--root-certificates", str(ca)]
    if auth_key is not None:
        argv += ["--auth-supernode-private-key", str(auth_key)]
    if isolation == "process":
        argv += ["--isolation", "process"]
    return argv


def write_flwr_config(home: Path, address: str, ca: Path | None, insecure: bool = False,
                      name: str = FLOWER_APP_NAME) -> Path:
    """``$FLWR_HOME/config.toml`` naming one SuperLink connection (the ``flwr`` CLI reads it)."""
    check_security(ca, insecure, "flwr run")
    parse_address(address)
    home.mkdir(parents=True, exist_ok=True)
    conn = ["insecure = true"] if insecure else [f"root-certificates = '{os.path.abspath(ca)}'"]
    text = "\n".join(["[superlink]", f"default = '{name}'", "", f"[superlink.{name}]", f"address = '{address}'",
                      *conn]) + "\n"
    path = home / "config.toml"
    path.write_text(text)
    return path


def app_dir() -> Path:
    """The Flower app folder (its pyproject.toml names fedmm's ServerApp and ClientApp)."""
    return Path(__file__).resolve().parents[1] / "engines" / "flower" / "app"


def flwr_run_argv(run_config: dict, name: str = FLOWER_APP_NAME) -> list[str]:
    return [executable("flwr"), "run", str(app_dir()), name, "--stream", "--run-config", format_config(run_config)]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until something accepts connections on host:port (or the process died, or the time is up)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


class ManagedProcess:
    """A child process in its own process group (its own children included), output to a log file
    (``log_path``) or, with ``log_path=None``, to this process's own output. ``die_with_parent``:
    it gets SIGTERM if the thread that started it ends (a launcher killed with SIGKILL included)."""

    def __init__(self, name: str, argv: list[str], log_path: Path | None, env: dict | None = None,
                 die_with_parent: bool = False) -> None:
        self.name, self.log_path = name, None if log_path is None else Path(log_path)
        self._log = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True,
                                     preexec_fn=terminate_with_parent() if die_with_parent else None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)   # the group this process leads (start_new_session)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Immediate stop, as a crash would (SIGKILL to the process and its children)."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def _session_children(self) -> list[tuple[int, str]]:
        """(pid, start time) of children that left this process's group (the SuperLink starts its
        helper in a session of its own); read from /proc, empty where that does not exist."""
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            fields = stat_fields(int(entry.name))
            if len(fields) > 19 and int(fields[1]) == self.proc.pid and int(fields[2]) != self.proc.pid:
                found.append((int(entry.name), fields[19]))
        return found

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s; always reaps and closes the log. Children
        that started their own session get the same treatment if they outlive this process."""
        try:
            strays = self._session_children() if self.running() else []
            if self.running():
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait(timeout=30)
            self._signal_group(signal.SIGKILL)  # children left behind by a process that exited
            deadline = time.time() + timeout
            for pid, started in strays:   # normally already stopped by their parent's shutdown
                while process_alive(pid, started) and time.time() < deadline:
                    time.sleep(0.2)
                if process_alive(pid, started):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if self._log is not None:
                self._log.close()

    def tail(self, n: int = 30) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
