"""Peak memory and CPU time of every process of a tree, by role (the round benchmark's columns).

Read from Linux's /proc: VmHWM (the process's peak resident set) and user + system CPU time of
each descendant of a process, sampled until that process exits (CPU time of a process that ends
between two samples is counted up to its last sample).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

ROLES = (("fedmm.engines.flower.worker", "ClientApp (long-lived)"), ("flwr-clientapp", "ClientApp (per message)"),
         ("flower-supernode", "SuperNode"), ("fedmm.engines.flower.supernode", "SuperNode"),
         ("flower-superlink", "SuperLink"), ("flwr-serverapp", "ServerApp"), ("flower-superexec", "SuperExec"),
         ("bin/flwr run", "flwr run"), ("spawn_main", "client worker"))


def _role(pid: int, cmdline: str, root: int) -> str:
    if pid == root:
        return "main"
    return next((role for key, role in ROLES if key in cmdline), "other")


def _tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def work_folder(out: Path | None, prefix: str) -> Path:
    """``out`` (created), or a new temporary folder named ``prefix...`` when it is None."""
    out = Path(tempfile.mkdtemp(prefix=prefix)) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_child(argv: list[str], env: dict, log: Path, result: Path, timeout: float | None = None):
    """Run ``argv`` with its output in ``log``, its process tree watched (:func:`watch`), killed after
    ``timeout`` s; returns (exit status, the tree's readings, the JSON it wrote to ``result`` or {})."""
    result.unlink(missing_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            procs = watch(proc)
        finally:
            if timer is not None:
                timer.cancel()
    return proc.returncode, procs, json.loads(result.read_text()) if proc.returncode == 0 else {}


def round_seconds(ends: list[float]) -> list[float]:
    """Seconds of each round from the rounds' end times (``wall_s`` of metrics.jsonl)."""
    return [b - a for a, b in zip([0.0] + ends[:-1], ends)]


def watch(proc: subprocess.Popen, every: float = 0.2) -> dict[int, tuple[str, int, float]]:
    """pid -> (role, peak RSS in kB, CPU seconds) of every process of ``proc``'s tree until it exits.
    Processes that leave their session stay children of the launcher, so the tree holds them all."""
    seen: dict[int, tuple[str, int, float]] = {}
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            role = _role(pid, cmd, proc.pid)      # read again: a child seen before its exec looks like its parent
            old_role, old_hwm, old_cpu = seen.get(pid, (role, 0, 0.0))
            seen[pid] = (role if role != "other" else old_role, max(hwm, old_hwm), max(cpu, old_cpu))
        time.sleep(every)
    return seen


def cpu_line(procs: dict[int, tuple[str, int, float]]) -> str:
    """CPU seconds by role, largest first."""
    by_role: dict[str, float] = {}
    for role, _, cpu in procs.values():
        by_role[role] = by_role.get(role, 0.0) + cpu
    return "; ".join(f"{role} {cpu:.0f}" for role, cpu in sorted(by_role.items(), key=lambda x: -x[1]) if cpu >= 0.5)


def memory_line(procs: dict[int, tuple[str, int, float]]) -> str:
    """Peak RSS in MiB by role (one figure, or the count and range over that role's processes)."""
    by_role: dict[str, list[int]] = {}
    for role, kb, _ in procs.values():
        by_role.setdefault(role, []).append(kb)
    parts = []
    for role, kbs in sorted(by_role.items(), key=lambda x: -max(x[1])):
        mib = sorted(round(k / 1024) for k in kbs)
        parts.append(f"{role} {mib[0]}" if len(mib) == 1 else f"{role} {len(mib)}x {mib[0]}-{mib[-1]}")
    return "; ".join(parts)
