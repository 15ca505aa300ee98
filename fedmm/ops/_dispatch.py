"""Backend selection shared by every op in :mod:`fedmm.ops`.

``auto`` picks the first available backend of an op's preference list and logs
the choice once per (op, backend); an explicitly requested backend that is not
available raises :class:`BackendUnavailableError` -- never a silent fallback.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Mapping

log = logging.getLogger("fedmm.ops")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here."""


@functools.lru_cache(maxsize=None)
def _log_choice_once(op: str, backend: str) -> None:
    log.info("fedmm.ops.%s: using backend %r", op, backend)


def resolve_backend(op: str, requested: str, available: Mapping[str, Callable[[], str | None]]) -> str:
    """Return the backend to use for ``op``.

    ``available`` maps backend names, in order of preference, to a probe that
    returns ``None`` when the backend can run, else a human-readable reason.
    """
    if requested == "auto":
        for name, probe in available.items():
            if probe() is None:
                _log_choice_once(op, name)
                return name
        raise BackendUnavailableError(f"{op}: no backend available among {list(available)}")
    if requested not in available:
        raise ValueError(f"{op}: unknown backend {requested!r}; choose from {['auto', *available]}")
    reason = available[requested]()
    if reason is not None:
        raise BackendUnavailableError(f"{op}: backend {requested!r} unavailable: {reason}")
    return requested
