"""Processes by PID, safely: a PID with its start time names one process (a reused PID does not
match), and a child can be tied to the life of the thread that started it.

Read from Linux's /proc; elsewhere nothing is found and nothing is tied.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after "pid (comm)": state, ppid, pgrp, ..., starttime at index 19."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_time(pid: int) -> str | None:
    """When the process ``pid`` started (clock ticks since boot, from /proc), None if there is none."""
    fields = stat_fields(pid)
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, started: str) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (not a zombie, not a reused pid)."""
    fields = stat_fields(pid)
    return len(fields) > 19 and fields[19] == started and fields[0] != "Z"


def terminate_with_parent():
    """A ``preexec_fn``: the child gets SIGTERM when the thread that started it ends, so a killed
    launcher leaves no process behind (Linux ``PR_SET_PDEATHSIG``; None elsewhere). The C function is
    looked up here, before the fork; the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl, parent, sig = ctypes.CDLL(None, use_errno=True).prctl, os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:
        prctl(1, sig)                       # PR_SET_PDEATHSIG
        if os.getppid() != parent:          # the parent ended before that took effect
            os._exit(1)

    return preexec
