"""send_and_receive over a fake Grid: every message answered once, never more than ``in_flight``
out at once, the order kept, and what each node took recorded."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

from fedmm.engines.flower.exchange import send_and_receive  # noqa: E402


class FakeGrid:
    """Answers a message ``work[node]`` pull calls after it was pushed; records the most out at once."""

    def __init__(self, work: dict[int, int], refuse: frozenset = frozenset()) -> None:
        self.work, self.refuse = work, refuse
        self.out: dict[str, list] = {}   # message id -> [node, pulls left]
        self.pushed: list[int] = []
        self.most_out = 0

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            self.pushed.append(node)
            if node in self.refuse:
                ids.append(None)
                continue
            mid = f"m{len(self.pushed)}"
            self.out[mid] = [node, self.work[node]]
            ids.append(mid)
        self.most_out = max(self.most_out, len(self.out))
        return ids

    def pull_messages(self, message_ids):
        replies = []
        for mid in list(message_ids):
            entry = self.out.get(mid)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] <= 0:
                del self.out[mid]
                replies.append(SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid, src_node_id=entry[0])))
        return replies


def _messages(nodes):
    return [SimpleNamespace(metadata=SimpleNamespace(dst_node_id=n)) for n in nodes]


@pytest.mark.parametrize("in_flight,expect_most", [(0, 5), (1, 1), (2, 2), (9, 5)])
def test_at_most_in_flight_messages_are_out_and_all_are_answered(in_flight, expect_most):
    work = {1: 3, 2: 1, 3: 2, 4: 1, 5: 4}
    grid, took = FakeGrid(work), {}
    replies = send_and_receive(grid, _messages([5, 1, 3, 2, 4]), timeout=30, poll=0.0, in_flight=in_flight, took=took)
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2, 3, 4, 5]
    assert grid.pushed == [5, 1, 3, 2, 4]             # sent in the order given
    assert grid.most_out == expect_most
    assert sorted(took) == [1, 2, 3, 4, 5] and all(t >= 0 for t in took.values())


def test_a_refused_message_frees_its_slot_and_the_rest_are_sent():
    grid = FakeGrid({1: 1, 2: 1, 3: 1}, refuse=frozenset({1}))
    replies = send_and_receive(grid, _messages([1, 2, 3]), timeout=30, poll=0.0, in_flight=1)
    assert sorted(r.metadata.src_node_id for r in replies) == [2, 3]
    assert grid.pushed == [1, 2, 3]


def test_unanswered_messages_end_at_the_timeout_and_later_ones_are_not_sent():
    grid = FakeGrid({1: 10**9, 2: 1})
    start = time.time()
    replies = send_and_receive(grid, _messages([1, 2]), timeout=0.3, poll=0.01, in_flight=1)
    assert replies == [] and grid.pushed == [1]
    assert time.time() - start < 5


def test_a_simulation_keeps_as_many_clients_in_flight_as_workers_or_cores():
    from fedmm.engines.flower.launch import simulation_in_flight
    from fedmm.engines.workers import available_cores
    assert simulation_in_flight(1, 4) == 1
    assert simulation_in_flight(3, 4) == 3
    assert simulation_in_flight(4, 4) == 0 and simulation_in_flight(8, 4) == 0   # 0: every message at once
    assert simulation_in_flight(0, 1000) == available_cores()

