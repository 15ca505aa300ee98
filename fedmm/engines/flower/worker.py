"""A long-lived ClientApp process for one SuperNode started with ``--isolation process``.

With Flower 1.42's default ``subprocess`` isolation, the SuperNode starts
``flower-superexec``, which starts a fresh ``flwr-clientapp`` process for every
message; each one imports PyTorch and fedmm again and re-encodes the client's
data. With ``--isolation process`` the SuperNode starts nothing and waits for an
outside process to claim its tasks through its Runtime API (``--host``/``--port``).
This is that process:

    python -m fedmm.engines.flower.worker --runtime-api-address 127.0.0.1:9094 \\
        [--superexec-auth-secret-file F] [--supernode-pid PID] [--poll 0.2]

It imports fedmm once, then loops: claim a ClientApp task (``AcquireTask``),
pull the message and context with the task's token, run fedmm's ClientApp in
this process (the client's encoded data kept in a
:class:`~fedmm.engines.clientside.ClientCache`), push the reply and the task's
status, and wait for the next. It serves one SuperNode, hence one client.
It stops on SIGTERM/SIGINT, and by itself when the SuperNode ``--supernode-pid``
(checked with its start time, so a reused PID does not count) is gone.

The task protocol is the one ``flwr-clientapp`` speaks (the steps of
``flwr.supernode.runtime.run_clientapp``), tied to ``flwr`` 1.42.x.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from logging import ERROR, INFO, WARNING

import httpx
import flwr
from flwr.app import Message as FlowerMessage
from flwr.app.error import Error
from flwr.common import log
from flwr.common.config import get_fab_config
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (AcquireTaskRequest, PullAppMessagesRequest,  # pylint: disable=E0611
                                    PullTaskInputRequest, SendTaskHeartbeatRequest)
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import (make_confirm_message_received_fn_protobuf,
                                                                 make_pull_object_fn_protobuf)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor,
                                         SuperExecAuthHttpInterceptor)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedmm.deploy.pids import process_alive, start_time

CLIENT_APP_REF = "fedmm.engines.flower.client_app:app"
FLWR_SERIES = "1.42."
READY_LINE = "fedmm ClientApp process ready"
QUIET_AFTER_S, QUIET_POLL_S = 60.0, 1.0   # no task for a minute: ask every second instead of every --poll s
PULL_BACKOFF_S = (0.05, 0.5)   # first and longest wait for a message object not yet at the SuperNode


def pull_task_input(client: RuntimeHttpClient):
    """(message, context, run, FAB) of the claimed task: ``flwr-clientapp``'s own steps, except that an
    object the SuperNode is still downloading is asked for again after 50 ms, not Flower's 1 s (a task
    can be claimed as soon as its message arrives, before its arrays have)."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = res.task_id, res.run.run_id, res.context.node_id
    context, run, fab = context_from_proto(res.context), run_from_proto(res.run), fab_from_proto(res.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message for this task at the SuperNode's Runtime API")
    node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=FlowerMessage, initial_backoff=PULL_BACKOFF_S[0], backoff_cap=PULL_BACKOFF_S[1])
    message.metadata.__dict__["_message_id"] = tree.object_id   # as flwr-clientapp sets it
    return message, context, run, fab


def _heartbeat(client: RuntimeHttpClient):
    """Task heartbeat that never signals this process (``flwr-clientapp``'s raises SIGINT when the
    SuperNode drops the task; here the process outlives the task, so that is only logged)."""
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            res = client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as err:
            if err.response.status_code in (503, 504):
                return False
            log(WARNING, "[fedmm] task heartbeat refused (%s)", err.response.status_code)
            return True
        if not res.success:
            log(WARNING, "[fedmm] the SuperNode no longer knows this task; its reply will be ignored")
        return True

    return beat


class ClientAppWorker:
    """Claims and runs the ClientApp tasks of one SuperNode, one at a time, in this process."""

    def __init__(self, address: str, secret: bytes | None = None, poll: float = 0.2) -> None:
        from fedmm.engines.clientside import ClientCache
        from fedmm.engines.flower.client_app import make_client_app   # PyTorch and fedmm, imported once

        self.address, self.poll = address, float(poll)
        self.cache = ClientCache()
        self.app = make_client_app(self.cache)
        interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if secret:
            interceptors.append(SuperExecAuthHttpInterceptor(
                master_secret=secret, protected_methods={"/flwr.proto.Runtime/AcquireTask"}))
        self.retry = make_simple_http_retry_invoker()
        self.control = RuntimeHttpClient.from_server_address(address, True, None, interceptors,
                                                             retry_invoker=self.retry)
        self.stopping = False
        self.tasks_done = 0

    def serve(self) -> None:
        """Claim and run tasks until :meth:`stop` (or a signal) ends the loop."""
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        log(INFO, "[fedmm] %s (pid %d), Runtime API %s", READY_LINE, os.getpid(), self.address)
        last_task = time.monotonic()
        while not self.stopping:
            res = self.control.AcquireTask(request)
            if res.HasField("task") and res.token:
                self.run_task(res.token)
                last_task = time.monotonic()
            else:
                quiet = time.monotonic() - last_task > QUIET_AFTER_S
                time.sleep(max(self.poll, QUIET_POLL_S) if quiet else self.poll)

    def run_task(self, token: str) -> None:
        """One task: pull its message, run the ClientApp here, push the reply and the task's status."""
        retry = make_simple_http_retry_invoker()
        client = RuntimeHttpClient.from_server_address(
            self.address, True, None,
            [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)],
            retry_invoker=retry)
        beats = HeartbeatSender(_heartbeat(client))
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        started = pulled = ran = time.time()
        log(INFO, "[fedmm] task claimed (unix time %.3f)", started)
        try:
            beats.start()
            message, context, run, fab = pull_task_input(client)
            pulled = time.time()
            ref = get_fab_config(fab.content)["tool"]["flwr"]["app"]["components"]["clientapp"]
            if ref != CLIENT_APP_REF:
                raise RuntimeError(f"this process runs fedmm's ClientApp ({CLIENT_APP_REF}); the run's app "
                                   f"{run.fab_id} names {ref!r}")
            reply = self.app(message=message, context=context)
            ran = time.time()
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # pylint: disable=broad-exception-caught  (reported to the ServerApp)
            log(ERROR, "[fedmm] ClientApp raised an exception", exc_info=exc)
            details = f"{type(exc)}:<'{exc}'>"
            if message is not None:
                reply = FlowerMessage(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                                      reply_to=message)
        finally:
            if self.stopping:
                retry.max_tries = 1           # stopping: one attempt each, no waiting on a SuperNode gone
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                log(ERROR, "[fedmm] failed to push the reply", exc_info=exc)
            push_task_output(client, context, status, details)
            if beats.is_running:
                beats.stop()
            client.close()
        self.tasks_done += 1
        kind = message.metadata.message_type if message is not None else "?"
        done = time.time()
        log(INFO, "[fedmm] task %d (%s) %s in %.2f s: pull %.2f s, ClientApp %.2f s, push %.2f s "
            "(data cache: %d hits, %d encodings)", self.tasks_done, kind, status, done - started, pulled - started,
            max(0.0, ran - pulled), done - max(ran, pulled), self.cache.hits, self.cache.misses)

    def stop(self) -> None:
        self.stopping = True
        self.retry.max_tries = 1

    def close(self) -> None:
        self.control.close()


def _watch(pid: int, on_gone) -> None:
    """Call ``on_gone`` once the process ``pid`` (as it was when this started) has exited."""
    started = start_time(pid)

    def loop() -> None:
        while started is not None and process_alive(pid, started):
            time.sleep(1.0)
        on_gone()

    threading.Thread(target=loop, name="supernode-watch", daemon=True).start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fedmm.engines.flower.worker", description=__doc__.split("\n")[0])
    p.add_argument("--runtime-api-address", required=True, help="HOST:PORT of the SuperNode's Runtime API")
    p.add_argument("--superexec-auth-secret-file", help="the secret file the SuperNode was started with")
    p.add_argument("--supernode-pid", type=int, help="exit when this process (the SuperNode) exits")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between task claims when idle")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fedmm.engines.flower.worker``."""
    args = parse_args(argv)
    if not flwr.__version__.startswith(FLWR_SERIES):
        log(ERROR, "[fedmm] the ClientApp process speaks flwr %sx's task protocol; flwr %s is installed",
            FLWR_SERIES, flwr.__version__)
        return 2
    secret = None
    if args.superexec_auth_secret_file:
        with open(args.superexec_auth_secret_file, "rb") as fh:
            secret = fh.read()
    worker = ClientAppWorker(args.runtime_api_address, secret, args.poll)

    def on_signal(signum, _frame) -> None:
        worker.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.supernode_pid:
        _watch(args.supernode_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        worker.serve()
    except SystemExit:
        log(INFO, "[fedmm] ClientApp process stopped after %d tasks", worker.tasks_done)
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
