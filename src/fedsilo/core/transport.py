"""The server-side transport contract shared by simulation and deployment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from fedsilo.core.messages import Rejection, Reply, Task


class ServerTransport(Protocol):
    def clients(self) -> list[str]:
        """Institutions currently available."""
        ...

    def dispatch(self, tasks: Sequence[Task]) -> None:
        """Hand tasks to their institutions (queued until they are pulled or run)."""
        ...

    def poll(self, timeout: float | None = None) -> Iterator[Reply]:
        """Yield replies as they arrive, until every dispatched task is answered or timeout."""
        ...

    def next_reply(self, timeout: float) -> Reply | None:
        """The next reply within `timeout` seconds, or None (nothing is dropped)."""
        ...

    def withdraw(self, task_ids: Sequence[str]) -> None:
        """Stop waiting for these tasks: unsent ones are unqueued, late replies refused."""
        ...

    def acknowledge(self, reply: Reply, rejection: Rejection | None) -> None:
        """Tell the institution whether its reply was accepted (or why not)."""
        ...

    def close(self) -> None: ...
