"""The institution's side of deployment: connect out, pull tasks, push replies.

Connection loss is retried with exponential backoff (with jitter); a refusal of identity is
final (AuthenticationError), and so is a server certificate this kit cannot verify
(ConfigError: the TLS handshake fails on our side, at the first contact). A call the server
refuses for fair share (RESOURCE_EXHAUSTED: over a limit; ABORTED: a newer Pull of this
institution replaced it) is retried after a backoff delay on the same connection, and a
refused reply is sent again: the server is there, it only asks us to slow down. `stop` (set on
SIGTERM) ends the loop after the current task.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

import grpc

from fedsilo.core.messages import Reply, Task
from fedsilo.errors import AuthenticationError, ConfigError, TransportError
from fedsilo.transport import serde
from fedsilo.transport.allocator import keep_freed_memory
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.server import OPTIONS, SERVICE
from fedsilo.transport.grpc.tls import INSECURE_ID_HEADER

log = logging.getLogger(__name__)
REFUSED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED)


class Backoff:
    """Delays of base·2^k seconds (capped), each jittered to between half and all of it."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, seed: int | None = None) -> None:
        self.base, self.cap, self.attempt = base, cap, 0
        self._rng = random.Random(seed)

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return delay * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


def run_institution(address: str, handle: Callable[[Task], Reply],
                    credentials: grpc.ChannelCredentials | None, name: str = "",
                    stop: threading.Event | None = None, wait: float = 20.0,
                    give_up_after: float | None = None, backoff: Backoff | None = None,
                    on_receipt: Callable[[Reply, str], None] | None = None) -> int:
    """Serve tasks until the server says the run is over or `stop` is set.

    Args:
        credentials: mutual-TLS channel credentials; None only for an explicit insecure run
            (then `name` is sent as the claimed identity).
        give_up_after: seconds of failed reconnection after which to raise TransportError.
        on_receipt: given the reply and the server's signed receipt of each accepted update.

    Returns:
        The number of tasks answered.
    Raises:
        AuthenticationError: the server refused this institution's identity.
        ConfigError: we refused the server's certificate in the TLS handshake (not from
            this kit's CA, or not for that host name).
        TransportError: the server stayed unreachable for `give_up_after` seconds.
    """
    keep_freed_memory()  # every round moves model-sized messages
    stop = stop or threading.Event()
    backoff = backoff or Backoff()
    metadata = [(INSECURE_ID_HEADER, name)] if credentials is None else []
    answered, failing = 0, 0.0
    while not stop.is_set():
        channel = (grpc.insecure_channel(address, OPTIONS) if credentials is None
                   else grpc.secure_channel(address, credentials, OPTIONS))
        stub = Stub(channel)
        try:
            while not stop.is_set():
                try:
                    kind, meta, arrays = serde.decode(stub.Pull(
                        pb.PullRequest(wait_seconds=wait), metadata=metadata,
                        timeout=wait + 30))
                except grpc.RpcError as e:
                    if not slowed_down(e, "our Pull", backoff, stop):
                        raise
                    continue
                backoff.reset()
                failing = 0.0
                if kind == "shutdown":
                    log.info("server: the run is over")
                    return answered
                if kind == "task":
                    _answer(stub, handle(serde.task_from(meta, arrays)), metadata, backoff,
                            stop, on_receipt)
                    answered += 1
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise AuthenticationError(f"server refused us: {e.details()}") from None  # type: ignore[attr-defined]
            refusal = handshake_refusal(address, e.details() or "")  # type: ignore[attr-defined]
            if refusal is not None:
                raise ConfigError(refusal) from None
            delay = backoff.next()
            failing += delay
            if give_up_after is not None and failing > give_up_after:
                raise TransportError(f"server {address} unreachable: {code.name}") from None
            log.warning("connection to %s failed (%s); retrying in %.1f s", address, code.name,
                        delay)
            stop.wait(delay)
        finally:
            channel.close()
    return answered


# what gRPC's status details say when we refuse the server's certificate -> what it means
REFUSALS = {
    "Tls handshake failed": "its certificate is not from this kit's CA (a kit of another "
                            "project, or the server runs another project's kit)",
    "Hostname Verification Check failed": "its certificate is not for that host name (use "
                                          "the server name the kits were provisioned with)",
}


def slowed_down(error: grpc.RpcError, what: str, backoff: Backoff,
                stop: threading.Event) -> bool:
    """If the server refused `what` for fair share, wait a backoff delay and say True; False
    for any other failure."""
    if error.code() not in REFUSED:  # type: ignore[attr-defined]
        return False
    delay = backoff.next()
    log.warning("server refused %s: %s; retrying in %.1f s", what,
                error.details(), delay)  # type: ignore[attr-defined]
    stop.wait(delay)
    return True


def handshake_refusal(address: str, details: str) -> str | None:
    """Why we refused the server in the TLS handshake, from gRPC's status details (e.g.
    "... Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: ...: certificate
    signature failure"), or None for any other failure (retried): a server certificate this
    kit cannot verify is not a passing fault, no retry mends it."""
    for marker, meaning in REFUSALS.items():
        if marker in details:
            why = details.split(marker, 1)[1].strip(" :.").removesuffix(": OK")
            return (f"TLS handshake with the server at {address} failed: {meaning}"
                    + (f"; {why}" if why else ""))
    return None


class Stub:
    """Client side of the Coordinator service, frames as serialized bytes (see serde)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Pull = channel.unary_stream(f"/{SERVICE}/Pull",
                                         request_serializer=pb.PullRequest.SerializeToString,
                                         response_deserializer=_raw)
        self.Push = channel.stream_unary(f"/{SERVICE}/Push", request_serializer=_raw,
                                         response_deserializer=pb.Ack.FromString)


def _raw(frame: bytes) -> bytes:
    return frame


def _answer(stub: Stub, reply: Reply, metadata: list[tuple[str, str]], backoff: Backoff,
            stop: threading.Event,
            on_receipt: Callable[[Reply, str], None] | None = None) -> None:
    while True:
        try:
            ack = stub.Push(serde.encode("reply", serde.reply_meta(reply), reply.update),
                            metadata=metadata, timeout=900)
            break
        except grpc.RpcError as e:
            if stop.is_set() or not slowed_down(e, f"our reply to {reply.task_id}", backoff,
                                                stop):
                raise
    if ack.accepted:
        log.info("task %s: reply accepted", reply.task_id)
        if ack.receipt and on_receipt is not None:
            on_receipt(reply, ack.receipt)
    else:
        log.warning("task %s: reply refused: [%s] %s", reply.task_id, ack.code, ack.reason)
