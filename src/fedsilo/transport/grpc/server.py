"""GrpcServerTransport: the ServerTransport of deployment.

The coordinator never opens a connection to an institution: institutions call `Pull` (a long
poll) and receive their next task, then `Push` their reply. `dispatch` queues tasks per
institution; `poll` yields replies as they arrive until every dispatched task is answered or
the deadline passes (then the missing institutions are dropped for that task, and may take the
next one). Every Push is answered with the strategy's verdict (accepted, or why not).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from fedsilo.core.messages import Reply, Task
from fedsilo.core.params import digest
from fedsilo.errors import AuthenticationError, FedsiloError, UnknownClient, WrongRound
from fedsilo.transport import serde
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.tls import Gatekeeper

if TYPE_CHECKING:
    from fedsilo.algorithms.base import Rejection

log = logging.getLogger(__name__)
SERVICE = "fedsilo.v1.Coordinator"
MAX_WAIT = 60.0
OPTIONS = [("grpc.max_receive_message_length", 8 << 20),
           ("grpc.max_send_message_length", 8 << 20),
           ("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
           ("grpc.http2.max_pings_without_data", 0),
           ("grpc.keepalive_permit_without_calls", 1)]


class GrpcServerTransport:
    """Args:
        address: host:port to listen on ("127.0.0.1:0" picks a free port; see `.port`).
        gatekeeper: who may call (project institutions, revocations).
        credentials: mutual-TLS server credentials, or None with `gatekeeper.insecure`.
        liveness: seconds since its last call that an institution still counts as available
            (an idle institution is always inside a Pull, so a short window suffices).
        digests: hash every update as it is received (for the audit trail), in the receiving
            thread, so that the round loop does not pay for it.
    """

    def __init__(self, address: str, gatekeeper: Gatekeeper,
                 credentials: grpc.ServerCredentials | None, liveness: float = 10.0,
                 workers: int = 64, digests: bool = False) -> None:
        if credentials is None and not gatekeeper.insecure:
            raise AuthenticationError("no TLS credentials: pass a kit, or run insecure "
                                      "explicitly")
        self.gatekeeper = gatekeeper
        self.liveness = liveness
        self.digests = digests
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Task]] = defaultdict(deque)
        self._outstanding: dict[str, Task] = {}
        self._delivered: dict[str, Task] = {}  # per institution: sent, not yet answered
        self._seen: dict[str, float] = {}
        self._pulling: dict[str, int] = defaultdict(int)
        self._arrived: queue.Queue[tuple[Reply, Future[Rejection | None]]] = queue.Queue()
        self._futures: dict[str, Future[Rejection | None]] = {}
        self._closing = False
        self._server = grpc.server(ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
        self._server.add_generic_rpc_handlers((_handlers(_Servicer(self)),))
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        self._server.start()

    # ServerTransport -------------------------------------------------------------------
    def clients(self) -> list[str]:
        now = time.monotonic()
        with self._cond:
            return sorted(n for n, t in self._seen.items()
                          if self._pulling[n] > 0 or now - t < self.liveness)

    def wait_for_clients(self, count: int, timeout: float) -> list[str]:
        """Block until `count` institutions are available or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while len(self.clients()) < count and time.monotonic() < deadline:
            with self._cond:
                self._cond.wait(0.2)
        return self.clients()

    def dispatch(self, tasks: Sequence[Task]) -> None:
        with self._cond:
            for task in tasks:
                self._queues[task.client_id].append(task)
                self._outstanding[task.task_id] = task
            self._cond.notify_all()

    def poll(self, timeout: float | None = None) -> Iterator[Reply]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if not self._outstanding and self._arrived.empty():
                    return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._drop_outstanding()
                return
            try:
                reply, future = self._arrived.get(timeout=min(remaining or 1.0, 1.0))
            except queue.Empty:
                continue
            self._futures[reply.task_id] = future
            yield reply

    def next_reply(self, timeout: float) -> Reply | None:
        try:
            reply, future = self._arrived.get(timeout=timeout)
        except queue.Empty:
            return None
        self._futures[reply.task_id] = future
        return reply

    def withdraw(self, task_ids: Sequence[str]) -> None:
        with self._cond:
            for task_id in task_ids:
                task = self._outstanding.pop(task_id, None)
                if task is not None and task in self._queues[task.client_id]:
                    self._queues[task.client_id].remove(task)

    def acknowledge(self, reply: Reply, rejection: Rejection | None) -> None:
        future = self._futures.pop(reply.task_id, None)
        if future is not None and not future.done():
            future.set_result(rejection)

    def close(self, grace: float = 3.0) -> None:
        """Tell pulling institutions the run is over, then stop serving."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        time.sleep(min(grace, 0.5))
        self._server.stop(grace).wait()

    # servicer side ---------------------------------------------------------------------
    def _next_task(self, name: str, wait: float, context: grpc.ServicerContext) -> Task | str:
        deadline = time.monotonic() + max(0.0, min(wait, MAX_WAIT))
        with self._cond:
            self._seen[name] = time.monotonic()
            self._pulling[name] += 1
            try:
                while True:
                    if self._closing:
                        return "shutdown"
                    reopened = self._reopened(name)
                    if reopened is not None:
                        return reopened
                    if self._queues[name]:
                        task = self._queues[name].popleft()
                        self._delivered[name] = task
                        return task
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not context.is_active():
                        return "idle"
                    self._cond.wait(min(remaining, 1.0))
            finally:
                self._pulling[name] -= 1
                self._seen[name] = time.monotonic()
                self._cond.notify_all()

    def _reopened(self, name: str) -> Task | None:
        """The task `name` was sent and never answered, if it asks for work again: an
        institution answers before it pulls, so its earlier process is gone (killed,
        restarted) or lost the stream; the new connection gets the same task."""
        task = self._delivered.get(name)
        if task is None or task.task_id not in self._outstanding:
            return None
        log.info("%s asked for work while task %s was open: sending it again (its earlier "
                 "connection is gone)", name, task.task_id)
        return task

    def _receive(self, name: str, reply: Reply) -> Future[Rejection | None]:
        if self.digests and reply.update is not None:  # in this handler thread, in parallel
            reply = dataclasses.replace(reply, digest=digest(reply.update))
        with self._cond:
            self._seen[name] = time.monotonic()
            task = self._outstanding.get(reply.task_id)
            if task is None or task.client_id != name:
                raise WrongRound(f"task '{reply.task_id}' is not open for '{name}' (round "
                                 f"closed, never asked, or already answered)")
            del self._outstanding[reply.task_id]
            if self._delivered.get(name) is task:
                del self._delivered[name]
            future: Future[Rejection | None] = Future()
            self._arrived.put((reply, future))  # under the lock: poll never misses it
        return future

    def _drop_outstanding(self) -> None:
        with self._cond:
            late = sorted({t.client_id for t in self._outstanding.values()})
            for task in self._outstanding.values():
                pending = self._queues[task.client_id]
                if task in pending:
                    pending.remove(task)
            self._outstanding.clear()
        if late:
            log.warning("deadline passed without replies from %s; dropped for this task", late)


def _handlers(servicer: _Servicer) -> grpc.GenericRpcHandler:
    """The Coordinator service of fedsilo.proto. Frames stay serialized bytes in Python (serde
    reads and writes their wire format), so chunks are not copied by a protobuf parse."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Pull": grpc.unary_stream_rpc_method_handler(
            servicer.Pull, request_deserializer=pb.PullRequest.FromString,
            response_serializer=_raw),
        "Push": grpc.stream_unary_rpc_method_handler(
            servicer.Push, request_deserializer=_raw,
            response_serializer=pb.Ack.SerializeToString)})


def _raw(frame: bytes) -> bytes:
    return frame


class _Servicer:
    def __init__(self, transport: GrpcServerTransport) -> None:
        self.t = transport

    def Pull(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        name = self._identify(context)
        item = self.t._next_task(name, request.wait_seconds, context)
        if isinstance(item, str):
            yield from serde.encode(item, {}, None)
            return
        try:
            yield from serde.encode("task", serde.task_meta(item), item.params)
        except Exception:  # the stream broke: the deadline will drop this institution
            log.warning("task %s: sending to %s failed", item.task_id, name)
            raise

    def Push(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        name = self._identify(context)
        try:
            kind, meta, arrays = serde.decode(request_iterator)
            if kind != "reply":
                raise WrongRound(f"expected a reply, got a '{kind}' message")
            future = self.t._receive(name, serde.reply_from(meta, arrays, name))
        except FedsiloError as e:
            log.warning("refused a reply from %s: [%s] %s", name, e.code, e)
            return pb.Ack(accepted=False, code=e.code, reason=str(e))
        try:
            rejection = future.result(timeout=600)
        except TimeoutError:
            return pb.Ack(accepted=True, code="received", reason="received; not yet validated")
        if rejection is None:
            return pb.Ack(accepted=True)
        return pb.Ack(accepted=False, code=rejection.code, reason=rejection.reason)

    def _identify(self, context: grpc.ServicerContext) -> str:
        try:
            return self.t.gatekeeper.identify(context)
        except AuthenticationError as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
            raise  # unreachable: abort raises


__all__ = ["GrpcServerTransport", "UnknownClient"]
