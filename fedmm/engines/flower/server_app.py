"""The Flower ServerApp: the one round loop (:func:`fedmm.engines.loop.run_rounds`) over the Grid.

Run configuration (``flwr run ... --run-config``): ``server-dir`` (absolute path of
the server folder holding ``config.toml`` and ``federation.json``, as
``fedmm server init`` writes them; checkpoints and metrics go there too),
``resume`` (continue from its latest checkpoint), ``round-timeout`` (seconds to
wait for the clients' replies each round; a node that has not answered by then
is left out of the round) and ``node-wait`` (seconds to wait, at the start of a
round, for every client's SuperNode to be connected), ``in-flight`` (at most
that many TRAIN messages out at once, the slowest nodes of the last round first;
0, the default, sends every message at once: what a federation of separate sites
wants; a simulation on one machine sets its number of cores).

Flower's own ``Strategy.start`` is a second round loop (train + evaluate per
round); fedmm keeps one loop and uses the Grid directly as its transport: the
replies go through :func:`fedmm.engines.loop.accept` and the server step is
:meth:`ServerContext.finish_round` either way.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from logging import ERROR, INFO, WARNING
from pathlib import Path

import torch
from flwr.app import Context, MessageType
from flwr.app import Message as FlowerMessage
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedmm.config import to_toml
from fedmm.engines.clientside import read_federation
from fedmm.engines.flower import STATUS_FILE
from fedmm.engines.flower.exchange import send_and_receive
from fedmm.engines.flower.records import from_records, to_records
from fedmm.engines.loop import ServerContext, run_rounds
from fedmm.engines.transport import Reply, RoundFailed
from fedmm.federated.mechanisms import bn_stats
from fedmm.federated.messages import Message, MessageError
from fedmm.io import write_json


class LogReporter:
    """Round progress in the ServerApp log (streamed by ``flwr run --stream``)."""

    def __init__(self) -> None:
        self.t0 = time.time()

    def start_round(self, r: int, total_rounds: int, n_clients: int) -> None:
        self.t0 = time.time()
        log(INFO, "[fedmm] round %d/%d: %d clients", r + 1, total_rounds, n_clients)

    def client_done(self, name: str, meta: dict) -> None:
        if meta.get("task") == bn_stats.TASK:
            log(INFO, "[fedmm]   %s: BatchNorm statistics", name)
        else:
            log(INFO, "[fedmm]   %s: val macro-F1 %.3f", name, meta["val_score"])

    def end_round(self, r: int, info: dict) -> None:
        log(INFO, "[fedmm] round %d done in %.0f s: %d uploads, mean val macro-F1 %.3f", r + 1,
            time.time() - self.t0, info.get("n_uploads", 0), info["val_macro_f1_mean"])

    def message(self, text: str) -> None:
        log(WARNING, "[fedmm] %s", text)


class FlowerTransport:
    """One round = one Flower TRAIN message per connected SuperNode; the replies decoded."""

    def __init__(self, grid: Grid, ctx: ServerContext, round_timeout: float, node_wait: float,
                 in_flight: int = 0) -> None:
        self.grid, self.ctx = grid, ctx
        self.round_timeout, self.node_wait = float(round_timeout), float(node_wait)
        self.in_flight = max(0, int(in_flight))   # 0 = every message at once
        self.took: dict[int, float] = {}   # node -> seconds its last message took (to send the slowest first)
        self.stores: dict = {}   # client state stays on the SuperNodes' machines
        self.last_ok_nodes: list[int] | None = None   # nodes that answered the last round
        self.extra = {"config": to_toml(ctx.cfg), "federation": json.dumps(asdict(ctx.info))}

    def _nodes(self) -> list[int]:
        """Connected SuperNodes, waiting up to ``node_wait`` s for one per client."""
        deadline = time.time() + self.node_wait
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= len(self.ctx.info.clients) or time.time() >= deadline:
                return nodes
            time.sleep(1.0)

    def _send(self, broadcast: Message, round_idx: int, message_type: str,
              nodes: list[int] | None = None) -> tuple[list, list[str]]:
        nodes = self._nodes() if nodes is None else nodes
        need = self.ctx.min_clients   # a round cannot succeed with fewer nodes: not sent at all
        if len(nodes) < need:
            raise RoundFailed(f"round {round_idx + 1}: only {len(nodes)} SuperNodes connected after "
                              f"{self.node_wait:.0f} s, fewer than min_clients = {need}")
        content = to_records(broadcast, self.extra)
        order = sorted(nodes, key=lambda n: -self.took.get(n, float("inf")))   # unknown first, then slowest
        out = [FlowerMessage(content, dst_node_id=n, message_type=message_type, group_id=str(round_idx + 1))
               for n in order]
        took: dict[int, float] = {}
        replies = send_and_receive(self.grid, out, self.round_timeout, in_flight=self.in_flight, took=took)
        if message_type == MessageType.TRAIN:
            self.took.update(took)
        answered = {rep.metadata.src_node_id for rep in replies}
        problems = [f"node {n}: no reply within {self.round_timeout:.0f} s" for n in nodes if n not in answered]
        ok = []
        for rep in replies:
            if rep.has_error():
                problems.append(f"node {rep.metadata.src_node_id}: client failed: {rep.error.reason}")
            else:
                ok.append(rep)
        self.last_ok_nodes = sorted(rep.metadata.src_node_id for rep in ok)
        return ok, problems

    def exchange(self, broadcast: Message, round_idx: int) -> tuple[list[Reply], list[str]]:
        replies, problems = self._send(broadcast, round_idx, MessageType.TRAIN)
        out = []
        for rep in replies:
            source = f"node {rep.metadata.src_node_id}"
            try:
                out.append(Reply(source, from_records(rep.content, "upload")[0], announce=True))
            except MessageError as exc:
                problems.append(f"{source}: upload rejected: {exc}")
        return out, problems

    def finish(self, state) -> None:
        """Deliver the final global state (EVALUATE message) to the nodes that answered the last round
        (a node that dropped out is not waited for again); each writes its deployed model."""
        try:
            replies, problems = self._send(state.broadcast({"strategy": self.ctx.strategy.name}), state.round,
                                           MessageType.EVALUATE, self.last_ok_nodes)
        except RoundFailed as exc:  # the rounds are done and checkpointed; only the delivery failed
            self.ctx.reporter.message(f"final update not delivered: {exc}")
            return
        reports = []
        for rep in replies:
            try:
                reports.append(json.loads(rep.content.config_records["fedmm.update"]["report"]))
            except (KeyError, ValueError, TypeError) as exc:
                problems.append(f"node {rep.metadata.src_node_id}: bad update report ({exc!r})")
        for line in problems:
            self.ctx.reporter.message(f"final update: {line}")
        write_json(self.ctx.run_dir / "client_updates.json", sorted(reports, key=lambda x: str(x.get("client"))))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured rounds from ``server-dir``; record the outcome in ``server-dir/flower_run.json``."""
    rc = context.run_config
    server_dir = Path(str(rc["server-dir"]))
    if not server_dir.is_absolute():
        raise ValueError(f"run config server-dir must be an absolute path, got {server_dir}")
    (server_dir / STATUS_FILE).unlink(missing_ok=True)
    cfg, info = read_federation(server_dir)
    ctx = ServerContext(cfg, info, server_dir, LogReporter())
    if ctx.cfg.threads > 0:
        torch.set_num_threads(ctx.cfg.threads)
    transport = FlowerTransport(grid, ctx, float(rc["round-timeout"]), float(rc["node-wait"]),
                                int(rc.get("in-flight", 0)))
    try:
        state = run_rounds(ctx, transport, resume=bool(rc["resume"]))
        transport.finish(state)
    except RoundFailed as exc:
        log(ERROR, "[fedmm] %s", exc)
        write_json(server_dir / STATUS_FILE, {"status": "failed", "reason": str(exc)})
        raise
    write_json(server_dir / STATUS_FILE, {"status": "done", "rounds": state.round})
