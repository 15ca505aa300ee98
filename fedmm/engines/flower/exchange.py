"""Sending one round's messages over the Flower Grid and collecting the replies.

``Grid.send_and_receive`` of ``flwr`` 1.42 looks for replies every 3 s; a round
whose clients answer within a second would wait up to 3 s more for nothing.
:func:`send_and_receive` does the same with the Grid's public ``push_messages`` /
``pull_messages`` and a shorter interval (the SuperLink answers such a poll in
milliseconds). A reply becomes visible as soon as its sender has announced it,
while its arrays may still be uploading; Flower then asks for a missing object
again after 1 s, 2 s, 4 s ... While this function pulls, that first wait is the
poll interval instead (the ``pull_objects`` the deployment Grid's module uses is
swapped for the call with a shorter backoff, and put back afterwards).

On one machine a round can also keep only as many clients training at once as there
are cores (``in_flight``), the slowest clients of the last round first; real sites
each have their own machine and get every message at once.
"""
from __future__ import annotations

import functools
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

from flwr.app import Message as FlowerMessage
from flwr.serverapp import Grid

POLL_S = 0.2
OBJECT_BACKOFF_CAP_S = 1.0


@contextmanager
def short_object_backoff(grid: Grid, first: float) -> Iterator[None]:
    """While active, a reply object not uploaded yet is asked for again after ``first`` s (doubling up
    to 1 s). Nothing changes for a Grid whose module pulls objects otherwise (e.g. the simulation's)."""
    module = sys.modules.get(type(grid).__module__)
    original = getattr(module, "pull_objects", None)
    if original is None or not callable(original):
        yield
        return
    module.pull_objects = functools.partial(original, initial_backoff=first, backoff_cap=OBJECT_BACKOFF_CAP_S)
    try:
        yield
    finally:
        module.pull_objects = original


def send_and_receive(grid: Grid, messages: Iterable[FlowerMessage], timeout: float,
                     poll: float = POLL_S, in_flight: int = 0,
                     took: dict[int, float] | None = None) -> list[FlowerMessage]:
    """Push ``messages``; return the replies that arrived within ``timeout`` s (polled every ``poll`` s).

    ``in_flight`` > 0 keeps at most that many messages out at once, sending the next (in the given
    order) as soon as one is answered: on one machine (a simulation) as many clients train at once
    as there are cores instead of all of them time-slicing. ``took`` (if given) receives, per
    destination node, the seconds from pushing its message to seeing its reply."""
    queue = list(messages)
    limit = len(queue) if in_flight <= 0 else int(in_flight)
    deadline = time.time() + timeout
    pending: dict[str, tuple[int, float]] = {}   # message id -> (node, pushed at)
    replies: list[FlowerMessage] = []

    def refill() -> None:
        """Push from the queue until ``limit`` messages are out (a refused message frees its slot)."""
        while queue and len(pending) < limit:
            batch, queue[:] = queue[:limit - len(pending)], queue[limit - len(pending):]
            now = time.time()
            for msg, mid in zip(batch, grid.push_messages(batch)):
                if mid:   # None: that message was not accepted
                    pending[mid] = (msg.metadata.dst_node_id, now)

    with short_object_backoff(grid, poll):
        refill()
        while pending:
            got = list(grid.pull_messages(list(pending)))
            for rep in got:
                node, pushed = pending.pop(rep.metadata.reply_to_message_id, (None, 0.0))
                if node is None:
                    continue
                replies.append(rep)
                if took is not None:
                    took[node] = time.time() - pushed
            if time.time() >= deadline:
                break
            refill()
            if pending and not got:
                time.sleep(min(poll, max(0.0, deadline - time.time())))
    return replies
