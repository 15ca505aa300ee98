"""Errors a person can act on: one place that turns expected failures into short messages.

Every ``fedmm`` app is made with :func:`new_app`; its root group (:class:`FedmmGroup`)
catches what a command raises and prints ``error: <message>`` (plus a help hint for
usage errors) instead of a traceback:

* usage errors (bad option, bad config key or value, unknown strategy, preset,
  transport, ...) exit with code 2;
* expected runtime failures (:data:`EXPECTED`: damaged data or checkpoints, missing
  files, failed rounds, ...) exit with code 1.

Anything else is a bug and keeps its traceback (never with local variables).
``--debug`` anywhere on the command line, or ``FEDMM_DEBUG=1``, shows the full
traceback of an expected failure too.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import click
import typer
from typer.core import TyperGroup

from fedmm.engines.transport import TransportError
from fedmm.ops.backend import BackendUnavailableError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "FEDMM_DEBUG"
MAX_MESSAGE_LINES = 4
USAGE_EXIT = 2
FAILURE_EXIT = 1
# ValueError covers ManifestError, MessageError and the config/data checks; the OSError
# subclasses are missing/existing files and unreachable hosts.
EXPECTED = (ValueError, TransportError, BackendUnavailableError, FileNotFoundError, FileExistsError,
            IsADirectoryError, NotADirectoryError, PermissionError, ConnectionError, TimeoutError)


def debug_enabled() -> bool:
    """Whether ``FEDMM_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def split_debug_flag(args: Sequence[str]) -> tuple[list[str], bool]:
    """``args`` without ``--debug`` (before a ``--`` separator) and whether it was there."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    found = DEBUG_FLAG in args[:end]
    return [a for i, a in enumerate(args) if i >= end or a != DEBUG_FLAG], found


def reason(exc: BaseException) -> str:
    """The readable text of an exception (a KeyError's message without the repr quotes)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).strip() or type(exc).__name__


def usage_error(message: str) -> click.UsageError:
    """A usage error (exit code 2) for the command being run."""
    return click.UsageError(message)


@contextmanager
def usage_errors(*types: type[BaseException], prefix: str = "") -> Iterator[None]:
    """Re-raise ``types`` (default ValueError, KeyError) raised in the block as usage errors."""
    try:
        yield
    except (types or (ValueError, KeyError)) as exc:
        raise usage_error(prefix + reason(exc)) from exc


def _short(text: str) -> list[str]:
    lines = [line for line in text.strip().splitlines() if line.strip()] or ["(no message)"]
    if len(lines) > MAX_MESSAGE_LINES:
        more = len(lines) - MAX_MESSAGE_LINES + 1
        lines = lines[:MAX_MESSAGE_LINES - 1] + [f"... ({more} more lines; run with {DEBUG_FLAG} to see all)"]
    return lines


def print_error(message: str, hint: str | None = None) -> None:
    """``error: message`` on stderr (never wrapped), and an optional hint line."""
    lines = _short(message)
    click.echo(click.style("error:", fg="red", bold=True) + " " + lines[0], err=True)
    for line in lines[1:] + ([hint] if hint else []):
        click.echo(line, err=True)


def _help_hint(exc: click.ClickException) -> str | None:
    ctx = getattr(exc, "ctx", None)
    if not isinstance(exc, click.UsageError) or ctx is None or not ctx.help_option_names:
        return None
    return f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help."


def describe(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit code)`` for an expected failure, ``None`` for anything else (a bug)."""
    if isinstance(exc, EXPECTED):
        return reason(exc), FAILURE_EXIT
    return None


class FedmmGroup(TyperGroup):
    """Typer's group whose ``main`` maps expected failures to short messages and exit codes."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; on an error print it briefly and exit (see the module docstring)."""
        if not standalone_mode:  # a caller that handles errors itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args, flag = split_debug_flag(sys.argv[1:] if args is None else args)
        debug = flag or debug_enabled()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # Typer already printed the help
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            if debug and exc.__cause__ is not None:
                raise
            print_error(exc.format_message(), _help_hint(exc))
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(FAILURE_EXIT)
        except Exception as exc:
            known = describe(exc)
            if known is None or debug:
                raise
            print_error(known[0])
            sys.exit(known[1])
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def new_app(**kwargs: Any) -> typer.Typer:
    """A Typer app with fedmm's defaults: short error messages, no locals in tracebacks, help on no args."""
    kwargs.setdefault("cls", FedmmGroup)
    kwargs.setdefault("no_args_is_help", True)
    kwargs.setdefault("pretty_exceptions_show_locals", False)
    return typer.Typer(**kwargs)
