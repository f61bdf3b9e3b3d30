"""GrpcServerTransport: the ServerTransport of deployment.

The coordinator never opens a connection to an institution: institutions call `Pull` (a long
poll) and receive their next task, then `Push` their reply. `dispatch` queues tasks per
institution; `poll` yields replies as they arrive until every dispatched task is answered or
the deadline passes (then the missing institutions are dropped for that task, and may take the
next one). Every Push is answered with the strategy's verdict (accepted, or why not).

Fair share (fairness.py): the server is a grpc.aio server, so a waiting Pull is a coroutine on
one event loop and holds no thread; one Pull per institution waits (a newer one replaces it,
which ends with ABORTED), one Push per institution is received (on a pool thread, sized one
per institution), calls that bring no work are rate-limited per institution, and gRPC refuses
calls beyond `max_concurrent_rpcs` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from fedsilo.aggregation.secure.identity import Trust, contribution_message
from fedsilo.core.messages import Reply, Signed, Task
from fedsilo.core.params import digest
from fedsilo.errors import (
    AuthenticationError,
    FedsiloError,
    MalformedUpdate,
    ProtocolError,
    UnknownClient,
    WrongRound,
)
from fedsilo.transport import serde
from fedsilo.transport.allocator import keep_freed_memory
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.fairness import FairShare, Limits
from fedsilo.transport.grpc.gate import ReplyGate
from fedsilo.transport.grpc.loop import LoopThread
from fedsilo.transport.grpc.tls import Gatekeeper

if TYPE_CHECKING:
    from fedsilo.core.messages import Rejection

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
        workers: threads receiving Pushes (None: one per project institution, plus 8).
        limits: what one institution may take of the server (see fairness.Limits).
        trust: the project CA: every update must carry its institution's signature of (run,
            round, name, SHA-256), by the key of a certificate the CA issued to that name.
        receipt: makes the signed receipt of an accepted update (run, round, institution,
            SHA-256), returned to the institution with the acknowledgement.
    """

    def __init__(self, address: str, gatekeeper: Gatekeeper,
                 credentials: grpc.ServerCredentials | None, liveness: float = 10.0,
                 workers: int | None = None, digests: bool = False,
                 limits: Limits | None = None, trust: Trust | None = None,
                 receipt: Callable[[str, int, str, str], str] | None = None) -> None:
        if credentials is None and not gatekeeper.insecure:
            raise AuthenticationError("no TLS credentials: pass a kit, or run insecure "
                                      "explicitly")
        keep_freed_memory()  # every round moves model-sized messages
        self.gatekeeper = gatekeeper
        self.liveness = liveness
        self.digests = digests or trust is not None or receipt is not None
        self.trust = trust
        self.receipt = receipt
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Task]] = defaultdict(deque)
        self._outstanding: dict[str, Task] = {}
        self._delivered: dict[str, Task] = {}  # per institution: sent, not yet answered
        self._seen: dict[str, float] = {}
        self._pulling: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, _Waiter] = {}  # the one Pull of each institution that waits
        self.fair = FairShare(limits or Limits())
        self._arrived: queue.Queue[tuple[Reply, Future[Rejection | None]]] = queue.Queue()
        self._futures: dict[str, Future[Rejection | None]] = {}
        self._closing = False
        self._pool = ThreadPoolExecutor(workers or len(gatekeeper.institutions) + 8,
                                        thread_name_prefix="fedsilo-push")
        self._loop = LoopThread("fedsilo-grpc")
        try:
            self._server, self.port = self._loop.run(self._serve(address, credentials))
        except BaseException:
            self._loop.stop()
            raise

    async def _serve(self, address: str,
                     credentials: grpc.ServerCredentials | None) -> tuple[Any, int]:
        limits = self.fair.limits
        server = grpc.aio.server(
            migration_thread_pool=self._pool,
            options=[*OPTIONS, ("grpc.max_concurrent_streams", limits.streams_per_connection)],
            maximum_concurrent_rpcs=limits.concurrent_rpcs(len(self.gatekeeper.institutions)))
        server.add_generic_rpc_handlers((_handlers(_Servicer(self)),))
        port = (server.add_insecure_port(address) if credentials is None
                else server.add_secure_port(address, credentials))
        await server.start()
        return server, port

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
                self._wake(task.client_id)
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
            if self._closing:
                return
            self._closing = True
            for name in self._waiting:
                self._wake(name)
            self._cond.notify_all()
        time.sleep(min(grace, 0.5))
        self._loop.run(self._server.stop(grace))
        self._loop.stop()
        self._pool.shutdown(wait=False)
        self.fair.close()

    # servicer side ---------------------------------------------------------------------
    async def _next_task(self, name: str, wait: float) -> Task | str:
        """The next task of `name` (or the one it left open), "shutdown", "idle" after `wait`
        seconds, or "replaced" once a newer Pull of `name` waits instead. Runs on the event
        loop: waiting holds no thread; a caller that goes away cancels it."""
        deadline = time.monotonic() + max(0.0, min(wait, MAX_WAIT))
        me = _Waiter(asyncio.Event())
        with self._cond:
            earlier = self._waiting.get(name)
            if earlier is not None:
                earlier.replaced = True
                self._wake(name)
            self._waiting[name] = me
            self._seen[name] = time.monotonic()
            self._pulling[name] += 1
            self._cond.notify_all()
        try:
            while True:
                with self._cond:
                    item = self._ready(name, me)
                    if item is not None:
                        return item
                    me.event.clear()  # a wake-up after this check is set after it, on this loop
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "idle"
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(me.event.wait(), remaining)
        finally:
            with self._cond:
                if self._waiting.get(name) is me:
                    del self._waiting[name]
                self._pulling[name] -= 1
                self._seen[name] = time.monotonic()
                self._cond.notify_all()

    def _ready(self, name: str, me: _Waiter) -> Task | str | None:
        """What `name`'s waiting Pull `me` returns now, or None to keep waiting (under the
        lock). A fresh task gives the Pull's token back; a task sent again does not."""
        if self._closing:
            return "shutdown"
        if me.replaced:
            return "replaced"
        reopened = self._reopened(name)
        if reopened is not None:
            return reopened
        if not self._queues[name]:
            return None
        task = self._queues[name].popleft()
        self._delivered[name] = task
        self.fair.refund(name, "Pull")
        return task

    def _wake(self, name: str) -> None:
        """Wake `name`'s waiting Pull, if any (under the lock, from any thread)."""
        waiter = self._waiting.get(name)
        if waiter is not None:
            self._loop.call(waiter.event.set)

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

    def open_task(self, name: str, task_id: str) -> Task:
        """The task `task_id`, open and asked of `name`. Raises WrongRound otherwise."""
        with self._cond:
            return self._open(name, task_id)

    def _open(self, name: str, task_id: str) -> Task:  # under the lock
        task = self._outstanding.get(task_id)
        if task is None or task.client_id != name:
            raise WrongRound(f"task '{serde.shown(task_id)}' is not open for '{name}' (round "
                             f"closed, never asked, or already answered)")
        return task

    def witnessed(self, name: str, reply: Reply, run_id: str) -> Reply:
        """The reply with its update's SHA-256 (in this handler thread, in parallel), its
        signature checked.

        Raises:
            MalformedUpdate: the update is not signed by `name`'s certificate's key.
        """
        if not self.digests or reply.update is None:
            return reply
        reply = dataclasses.replace(reply, digest=digest(reply.update))
        if self.trust is None:
            return reply
        signed = Signed.of(reply.payload)
        if signed is None:
            raise MalformedUpdate(f"the update of '{name}' carries no signature (each "
                                  f"institution signs its updates with its kit key)")
        try:
            self.trust.verify(name, signed.certificate,
                              contribution_message(run_id, reply.round, name, reply.digest),
                              bytes.fromhex(signed.signature), what="the update")
        except (ProtocolError, ValueError) as e:
            raise MalformedUpdate(f"the update of '{name}': {e}") from None
        return reply

    def _receive(self, name: str, reply: Reply) -> Future[Rejection | None]:
        with self._cond:
            self._seen[name] = time.monotonic()
            task = self._open(name, reply.task_id)
            del self._outstanding[reply.task_id]
            if self._delivered.get(name) is task:
                del self._delivered[name]
            self.fair.refund(name, "Push")  # it answered an open task
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


@dataclasses.dataclass
class _Waiter:
    """A waiting Pull: woken by a task, the shutdown, or a newer Pull of its institution."""

    event: asyncio.Event
    replaced: bool = False


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

    async def Pull(self, request: Any, context: Any) -> AsyncIterator[bytes]:
        """A coroutine on the event loop (grpc.aio): a long poll holds no thread."""
        name, code, reason = self._admit(context, "Pull")
        if code is not None:
            await context.abort(code, reason)
        item = await self.t._next_task(name, request.wait_seconds)
        if item == "replaced":
            await context.abort(grpc.StatusCode.ABORTED, self.t.fair.replaced(name))
        if isinstance(item, str):
            for frame in serde.encode(item, {}, None):
                yield frame
            return
        try:
            for frame in serde.encode("task", serde.task_meta(item), item.params):
                yield frame
        except (Exception, asyncio.CancelledError):  # the stream broke: the deadline drops it
            log.warning("task %s: sending to %s failed", item.task_id, name)
            raise

    def Push(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        """On a pool thread; refused before its stream is read if `name` is over its rate or
        another of its Pushes is being received."""
        name, code, reason = self._admit(context, "Push")
        busy = reason if code is not None else self.t.fair.start_push(name)
        if busy is not None:
            context.abort(code or grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
        try:
            return self._reply(name, request_iterator)
        finally:
            self.t.fair.end_push(name)

    def _reply(self, name: str, request_iterator: Iterator[Any]) -> Any:
        """Receive `name`'s reply; answer with the strategy's verdict."""
        gate = ReplyGate(self.t, name)  # the manifest vs the open task, before allocating
        run_id = ""
        try:
            _, meta, arrays = serde.decode(request_iterator, gate.expect)
            reply = serde.reply_from(meta, arrays, name)
            run_id = gate.task.run_id if gate.task is not None else ""
            reply = self.t.witnessed(name, reply, run_id)
            future = self.t._receive(name, reply)
        except FedsiloError as e:
            log.warning("refused a reply from %s: [%s] %s", name, e.code, e)
            refused = gate.refuse(e)  # recorded against its open task: the round goes on
            if refused is None:
                return pb.Ack(accepted=False, code=e.code, reason=str(e))
            future = refused
        try:
            rejection = future.result(timeout=600)
        except TimeoutError:
            return pb.Ack(accepted=True, code="received", reason="received; not yet validated")
        if rejection is None:
            receipt = (self.t.receipt(run_id, reply.round, name, reply.digest)
                       if self.t.receipt is not None and reply.digest else "")
            return pb.Ack(accepted=True, receipt=receipt)
        return pb.Ack(accepted=False, code=rejection.code, reason=rejection.reason)

    def _admit(self, context: Any, method: str) -> tuple[str, Any, str]:
        """(caller, None, "") for a call to serve, else (caller, status code, reason): not an
        institution of the project (PERMISSION_DENIED), over its rate (RESOURCE_EXHAUSTED)."""
        try:
            name = self.t.gatekeeper.identify(context)
        except AuthenticationError as e:
            return "", grpc.StatusCode.PERMISSION_DENIED, str(e)
        refusal = self.t.fair.admit(name, method)
        if refusal is not None:
            return name, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal
        return name, None, ""


__all__ = ["GrpcServerTransport", "UnknownClient"]
