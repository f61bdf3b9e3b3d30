"""In-process transport: runs each institution directly, one task at a time.

No serialisation and no copies: the task's arrays are handed to the client as they are, and each
reply is yielded as soon as it exists so the server folds it into its accumulator before the next
client runs (memory O(model), not O(clients x model)).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from fedsilo.core.messages import Reply, Task
from fedsilo.errors import UnknownClient

if TYPE_CHECKING:
    from fedsilo.core.messages import Rejection


class Handler(Protocol):
    """Anything that answers a task: a Client, an Institution."""

    def handle(self, task: Task) -> Reply: ...


class InProcessTransport:
    def __init__(self, clients: Mapping[str, Handler]) -> None:
        self._clients = dict(clients)
        self._queue: deque[Task] = deque()

    def clients(self) -> list[str]:
        return sorted(self._clients)

    def dispatch(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            if task.client_id not in self._clients:
                raise UnknownClient(f"no institution named '{task.client_id}'")
        self._queue.extend(tasks)

    def poll(self, timeout: float | None = None) -> Iterator[Reply]:
        while self._queue:
            task = self._queue.popleft()
            yield self._clients[task.client_id].handle(task)

    def next_reply(self, timeout: float) -> Reply | None:
        """Run the next queued task now (in process nothing is ever late)."""
        if not self._queue:
            return None
        task = self._queue.popleft()
        return self._clients[task.client_id].handle(task)

    def withdraw(self, task_ids: Sequence[str]) -> None:
        ids = set(task_ids)
        self._queue = deque(t for t in self._queue if t.task_id not in ids)

    def call(self, task: Task) -> Reply:
        """Run one task now and return its reply (the virtual-clock driver times it)."""
        if task.client_id not in self._clients:
            raise UnknownClient(f"no institution named '{task.client_id}'")
        return self._clients[task.client_id].handle(task)

    def acknowledge(self, reply: Reply, rejection: Rejection | None) -> None:
        """Nothing to send back: the rejection is in the round's event."""

    def close(self) -> None:
        self._queue.clear()
