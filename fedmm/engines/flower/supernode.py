"""``flower-supernode`` with a shorter idle poll, for federations on one machine.

Flower 1.42's SuperNode asks the SuperLink for a new message, and when there is
none sleeps a fixed 3 s before asking again (and waits for its ClientApp's reply in
0.5 s steps). Every round therefore starts up to 3 s late on every node, whatever
the clients do. For a simulated federation on loopback that is most of a round's
overhead, so fedmm's local launcher starts the SuperNode through this module:

    python -m fedmm.engines.flower.supernode --poll 0.25 -- <flower-supernode arguments>

which runs Flower's own ``flower-supernode`` entry point with the sleeps of its
main loop (module ``flwr.supernode.start_client_internal``) capped at ``--poll``
seconds while the node is busy, and its first retry for a message object that is
still being uploaded to the SuperLink after ``--poll`` s instead of 1 s. That
replaces the module's references to :mod:`time` and ``pull_objects`` only; nothing
else changes. It relies on that module's code, so it is checked first (it must
import ``time`` and sleep 3 s when idle, as 1.42 does); when the check fails the
SuperNode runs unchanged and says so. Real deployments run the stock
``flower-supernode``.
"""
from __future__ import annotations

import functools
import inspect
import sys
import time
from logging import INFO, WARNING


IDLE_POLL_S = 3.0      # the loop's sleep when the SuperLink had no message
QUIET_AFTER_S = 60.0   # with no message for this long, the idle poll goes back to IDLE_POLL_S


class CappedSleeps:
    """Stands in for :mod:`time` in one module: ``sleep`` waits at most ``poll`` s, the rest is :mod:`time`.

    The idle wait (``sleep(3)``) is capped only while the node is busy, i.e. within ``quiet`` s of
    its last shorter sleep (the loop waiting for its ClientApp's reply): a node left idle for a
    minute asks the SuperLink every 3 s again, as Flower does."""

    def __init__(self, poll: float, quiet: float = QUIET_AFTER_S) -> None:
        self.poll, self.quiet = float(poll), float(quiet)
        self.last_busy = time.monotonic()

    def sleep(self, seconds: float) -> None:
        seconds = float(seconds)
        if seconds < IDLE_POLL_S:
            self.last_busy = time.monotonic()
        elif time.monotonic() - self.last_busy > self.quiet:
            time.sleep(seconds)
            return
        time.sleep(min(seconds, self.poll))

    def __getattr__(self, name: str):
        return getattr(time, name)


def cap_idle_poll(poll: float) -> bool:
    """Cap the sleeps of Flower's SuperNode loop at ``poll`` s, and its first wait for a message object
    the SuperLink does not hold yet at ``poll`` s too (Flower: 1 s, doubling); False (nothing changed)
    if that loop is not the one this was written for."""
    import flwr.supernode.start_client_internal as node_loop
    from flwr.supercore.inflatable.inflatable_utils import pull_objects

    source = inspect.getsource(node_loop)
    if (getattr(node_loop, "time", None) is not time or "time.sleep(3)" not in source
            or getattr(node_loop, "pull_objects", None) is not pull_objects):
        return False
    node_loop.time = CappedSleeps(poll)
    node_loop.pull_objects = functools.partial(pull_objects, initial_backoff=min(poll, 1.0), backoff_cap=1.0)
    return True


def main(argv: list[str] | None = None) -> None:
    """``[--poll S] [--] ARGS...``: run ``flower-supernode ARGS...`` with its idle poll capped at S s."""
    args = list(sys.argv[1:] if argv is None else argv)
    poll = 3.0
    if args[:1] == ["--poll"]:
        poll, args = float(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    from flwr.common import log
    from flwr.supernode.cli import flower_supernode

    if cap_idle_poll(poll):
        log(INFO, "[fedmm] SuperNode loop polls every %.2f s when idle (Flower's default: 3 s)", poll)
    else:
        log(WARNING, "[fedmm] this flwr's SuperNode loop is not the one expected; its idle poll stays unchanged")
    sys.argv = ["flower-supernode", *args]
    flower_supernode()


if __name__ == "__main__":
    main()
