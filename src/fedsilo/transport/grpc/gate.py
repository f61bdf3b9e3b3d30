"""ReplyGate: one Push as the server sees it before any array exists.

The manifest of an institution's reply is checked against the open task it answers (names,
dtypes, shapes and bytes: `serde.check_manifest`) before anything is allocated, and a reply
refused as malformed is recorded against that task: the round records the reason and goes on
instead of waiting for its deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from fedsilo.core.messages import ErrorInfo, Reply, ReplySpec, Task
from fedsilo.errors import FedsiloError, MalformedUpdate, WrongRound
from fedsilo.transport import serde

if TYPE_CHECKING:
    from fedsilo.core.messages import Rejection
    from fedsilo.transport.grpc.server import GrpcServerTransport


class ReplyGate:
    """Args:
        transport: the server transport (its open tasks).
        name: the authenticated institution pushing.
    """

    def __init__(self, transport: GrpcServerTransport, name: str) -> None:
        self.transport, self.name = transport, name
        self.task: Task | None = None  # the open task the reply names, once found

    def expect(self, kind: str, meta: Mapping[str, Any]) -> ReplySpec:
        """What this reply may carry (serde.decode's `expect`).

        Raises:
            WrongRound: not a reply, or a reply to no task open for this institution.
        """
        if kind != "reply":
            raise WrongRound(f"expected a reply, got a '{serde.shown(kind)}' message")
        self.task = self.transport.open_task(self.name, str(meta.get("task_id")))
        return serde.reply_allowance(self.task)

    def refuse(self, error: FedsiloError) -> Future[Rejection | None] | None:
        """Record a malformed reply as this institution's answer to its open task (an error
        reply the round rejects with `error`'s reason); None when there is no such task."""
        if self.task is None or not isinstance(error, MalformedUpdate):
            return None
        task = self.task
        reply = Reply(task.task_id, self.name, task.round, task.model_version, 0,
                      error=ErrorInfo(error.code, str(error)))
        try:
            return self.transport._receive(self.name, reply)
        except WrongRound:  # answered meanwhile (another Push of the same task)
            return None
