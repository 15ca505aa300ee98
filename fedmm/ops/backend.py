"""Backend selection shared by every op in :mod:`fedmm.ops` (docs/ARCHITECTURE.md §8).

``auto`` picks the first available backend of an op's preference list and logs
the choice once per (op, backend); an explicitly requested backend that is not
available raises :class:`BackendUnavailableError` -- never a silent fallback.
The probe of the compiled core ``fedmm._C`` (the ``cpp`` backend of the aggregation
and assignment ops) lives here too, so that no op imports another.
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


@functools.lru_cache(maxsize=1)
def extension_unavailable() -> str | None:
    """``None`` if the compiled core ``fedmm._C`` imports, else the reason."""
    try:
        from fedmm import _C  # noqa: F401
    except ImportError as exc:
        return f"fedmm._C could not be imported ({exc})"
    return None


def resolve_compiled(op: str, backend: str, fallback: str, probe: Callable[[], str | None]) -> str:
    """``cpp`` or ``fallback`` for ``op``: :func:`resolve_backend` over those two, with ``probe``
    saying why the compiled core is unavailable, and a one-time warning when ``auto`` falls back."""
    chosen = resolve_backend(op, backend, {"cpp": probe, fallback: lambda: None})
    if backend == "auto" and chosen != "cpp":
        warn_fallback_once(op, chosen, probe())
    return chosen


@functools.lru_cache(maxsize=None)
def warn_fallback_once(op: str, fallback: str, reason: str | None) -> None:
    """Log, once per op, that ``auto`` fell back because the compiled core is missing (``reason``)."""
    log.warning("fedmm.ops.%s: %s; using the %s fallback", op, reason, fallback)


@functools.lru_cache(maxsize=1)
def core():
    """The compiled core module ``fedmm._C`` (import it only once a probe said it loads)."""
    from fedmm import _C

    return _C
