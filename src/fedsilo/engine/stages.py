"""Stage tasks that every addressed institution must answer (XGBoost's start and finish, a
vertical run's stages): one helper, the first refusal stopping the run with its reason."""

from __future__ import annotations

from collections.abc import Sequence

from fedsilo.core.messages import Rejection, Reply, Task
from fedsilo.core.transport import ServerTransport
from fedsilo.errors import AggregationError


def ask_all(transport: ServerTransport, tasks: Sequence[Task], timeout: float | None,
            what: str) -> dict[str, Reply]:
    """Every institution's reply to `tasks` (one task each).

    Raises:
        AggregationError: `what`, then each refusal's reason, or who did not answer.
    """
    transport.dispatch(tasks)
    replies: dict[str, Reply] = {}
    problems = []
    for reply in transport.poll(timeout):
        rejection = None
        if reply.error is not None:
            problems.append(f"{reply.client_id}: {reply.error.reason}")
            rejection = Rejection(reply.client_id, reply.error.code, reply.error.reason)
        else:
            replies[reply.client_id] = reply
        transport.acknowledge(reply, rejection)
    missing = sorted({t.client_id for t in tasks} - set(replies))
    if problems or missing:
        raise AggregationError(f"{what}: " + "; ".join(
            problems or [f"no answer from {', '.join(missing)}"]))
    return replies
