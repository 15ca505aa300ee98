"""``fedmm deploy``: certificates and SuperNode keys, TLS by default (plain text only when asked),
a real SuperLink serving our certificate, and SuperNode authentication."""
from __future__ import annotations

import http.client
import ipaddress
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("flwr")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key  # noqa: E402

from fedmm.cli.app import app  # noqa: E402
from fedmm.deploy.pids import process_alive, start_time  # noqa: E402
from fedmm.deploy.processes import (ManagedProcess, flower_env, free_port, supernode_argv, superlink_argv,  # noqa: E402
                                    wait_for_port)
from fedmm.engines.flower.worker import READY_LINE  # noqa: E402

runner = CliRunner()


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    _ok("deploy", "certs", str(out), "--host", "127.0.0.1", "--host", "localhost", "--days", "2")
    return out


def test_certs_form_a_chain_for_the_given_hosts(certs):
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in ("ca.key", "server.key"):
        assert (certs / key).stat().st_mode & 0o077 == 0          # private keys: owner only
    again = runner.invoke(app, ["deploy", "certs", str(certs)])
    assert again.exit_code == 1 and "exists" in again.output


def test_node_key_is_what_flower_accepts(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    _ok("deploy", "node-key", str(tmp_path / "hospital_a"))
    private = load_ssh_private_key((tmp_path / "hospital_a").read_bytes(), None)
    public = load_ssh_public_key((tmp_path / "hospital_a.pub").read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert public.public_numbers() == private.public_key().public_numbers()
    assert try_load_public_key(tmp_path / "hospital_a.pub")
    assert (tmp_path / "hospital_a").stat().st_mode & 0o077 == 0


def test_tls_is_the_default_and_insecure_only_when_asked(certs, tmp_path):
    client = tmp_path / "client_0"
    (client / "train").mkdir(parents=True)
    root = tmp_path
    (root / "server").mkdir()
    commands = {
        "superlink": ["deploy", "superlink"],
        "supernode": ["deploy", "supernode", "--client-dir", str(client), "--superlink", "10.0.0.1:8000"],
        "start": ["deploy", "start", "--root", str(root), "--superlink", "10.0.0.1:8000"],
    }
    tls = {"superlink": ["--certs", str(certs)], "supernode": ["--ca", str(certs / "ca.crt")],
           "start": ["--ca", str(certs / "ca.crt")]}
    for name, cmd in commands.items():
        refused = runner.invoke(app, [*cmd, "--dry-run"])
        assert refused.exit_code == 2 and "TLS is the default" in refused.output, name
        both = runner.invoke(app, [*cmd, *tls[name], "--insecure", "--dry-run"])
        assert both.exit_code == 2 and "not both" in both.output, name
        secure = _ok(*cmd, *tls[name], "--dry-run")
        assert "--insecure" not in secure and "insecure" not in secure, name
        plain = _ok(*cmd, "--insecure", "--dry-run")
        assert "--insecure" in plain or name == "start", name
    secure = _ok(*commands["superlink"], *tls["superlink"], "--dry-run")
    assert all(f in secure for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile",
                                     "--disable-runtime-dependency-installation"))
    node = _ok(*commands["supernode"], *tls["supernode"], "--dry-run")
    assert "--root-certificates" in node and "client-dir=" in node and str(client) in node
    supernode_line, clientapp_line = node.strip().splitlines()          # default: two processes
    assert "--isolation process" in supernode_line and "--superexec-auth-secret-file" in supernode_line
    assert "fedmm.engines.flower.worker" in clientapp_line and "--runtime-api-address 127.0.0.1:9094" in clientapp_line
    stock = _ok(*commands["supernode"], *tls["supernode"], "--isolation", "subprocess", "--dry-run")
    assert len(stock.strip().splitlines()) == 1 and "--isolation" not in stock and "worker" not in stock
    bad = runner.invoke(app, [*commands["supernode"], *tls["supernode"], "--isolation", "thread", "--dry-run"])
    assert bad.exit_code == 2 and "--isolation" in bad.output
    _ok(*commands["start"], "--insecure", "--dry-run")
    assert "insecure = true" in (root / "server" / "flwr_home" / "config.toml").read_text()
    _ok(*commands["start"], *tls["start"], "--dry-run")
    assert "root-certificates" in (root / "server" / "flwr_home" / "config.toml").read_text()


def test_superlink_serves_our_certificate_and_admits_only_registered_supernodes(certs, tmp_path):
    """A real SuperLink (TLS, SuperNode authentication): our CA verifies it, the system trust store does
    not, plain HTTP gets no answer; a registered key joins, an unknown key is refused."""
    port = free_port()
    env = flower_env(FLWR_HOME=str(tmp_path / "home"))
    procs = []
    try:
        link = ManagedProcess("superlink", superlink_argv(certs, host="127.0.0.1", port=port, supernode_auth=True),
                              tmp_path / "superlink.log", env)
        procs.append(link)
        wait_for_port("127.0.0.1", port, 60, link.proc)
        ours = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ours)
        conn.request("GET", "/")
        assert conn.getresponse().status < 600                      # TLS handshake and HTTP worked
        conn.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            system = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ssl.create_default_context())
            system.request("GET", "/")
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            plain.request("GET", "/")
            plain.getresponse()

        for name in ("known", "stranger"):
            _ok("deploy", "node-key", str(tmp_path / name))
        (tmp_path / "client_0" / "train").mkdir(parents=True)
        out = _ok("deploy", "register", str(tmp_path / "known.pub"), "--root", str(tmp_path),
                  "--superlink", f"127.0.0.1:{port}", "--ca", str(certs / "ca.crt"))
        assert "registered successfully" in out
        nodes = {}
        for name in ("known", "stranger"):
            argv = supernode_argv(f"127.0.0.1:{port}", tmp_path / "client_0", certs / "ca.crt", port=free_port(),
                                  auth_key=tmp_path / name)
            nodes[name] = ManagedProcess(name, argv, tmp_path / f"{name}.log", env)
            procs.append(nodes[name])
        deadline = time.time() + 60
        while time.time() < deadline and nodes["stranger"].running():
            time.sleep(0.5)
        assert not nodes["stranger"].running() and "Failed to activate SuperNode" in nodes["stranger"].tail(50)
        while time.time() < deadline and "SuperNode ID" not in nodes["known"].tail(50):
            time.sleep(0.5)
        assert nodes["known"].running() and "SuperNode ID" in nodes["known"].tail(50)
    finally:
        for p in reversed(procs):
            p.stop()
    assert not any(p.running() for p in procs)


def test_insecure_superlink_only_when_asked_speaks_plain_http(tmp_path):
    port = free_port()
    link = ManagedProcess("superlink", superlink_argv(None, insecure=True, host="127.0.0.1", port=port),
                          tmp_path / "superlink.log", flower_env(FLWR_HOME=str(tmp_path / "home")))
    try:
        wait_for_port("127.0.0.1", port, 60, link.proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status < 600
        conn.close()
    finally:
        link.stop()
    assert not link.running()


def test_deploy_supernode_runs_both_processes_and_stops_both_on_sigterm(certs, tmp_path):
    """``fedmm deploy supernode`` (default isolation) against a real TLS SuperLink: a SuperNode and its
    ClientApp process start; SIGTERM to the command stops both (PID and start time checked), exit 0."""
    port = free_port()
    env = flower_env(FLWR_HOME=str(tmp_path / "home"))
    link = ManagedProcess("superlink", superlink_argv(certs, host="127.0.0.1", port=port), tmp_path / "link.log", env)
    cli = None
    try:
        wait_for_port("127.0.0.1", port, 60, link.proc)
        (tmp_path / "client_0" / "train").mkdir(parents=True)
        argv = [sys.executable, "-P", "-c", "from fedmm.cli.app import main; main()", "deploy", "supernode",
                "--client-dir", str(tmp_path / "client_0"), "--superlink", f"127.0.0.1:{port}",
                "--ca", str(certs / "ca.crt"), "--port", str(free_port()), "--log-dir", str(tmp_path / "logs")]
        cli = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = cli.stdout.readline()
        pids = [int(x) for x in re.findall(r"\(pid (\d+)\)", first)]
        assert len(pids) == 2, first
        started = [start_time(p) for p in pids]
        clientapp_log = tmp_path / "logs" / "clientapp_client_0.log"
        deadline = time.time() + 120
        while time.time() < deadline and READY_LINE not in (clientapp_log.read_text() if clientapp_log.exists()
                                                            else ""):
            time.sleep(0.5)
        assert READY_LINE in clientapp_log.read_text() and all(process_alive(p, s) for p, s in zip(pids, started))
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
        assert not any(process_alive(p, s) for p, s in zip(pids, started))
        assert not list(Path(tempfile.gettempdir()).glob("fedmm-node-*/.client_0.secret"))
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
        link.stop()


def test_run_transport_option_is_checked(tmp_path):
    bogus = runner.invoke(app, ["run", "--transport", "pigeon", "--out", str(tmp_path), "--quiet"])
    assert bogus.exit_code == 2 and "unknown transport 'pigeon'" in bogus.output
    central = runner.invoke(app, ["run", "--transport", "flower", "--strategy", "centralized", "--out", str(tmp_path),
                                  "--quiet"])
    assert central.exit_code == 2 and "centralized" in central.output
