"""Writes to the run store that never stop a run. A write that fails for a reason that may
pass (the database is locked, full, read-only, unreachable) is retried a bounded number of
times; if it still fails it is kept in memory, in order, and tried again before the next
write — so a store that comes back gets every round, its audit chain intact. A write the
database refuses outright (a constraint, a value it rejects) is logged and dropped. Nothing
here raises into the round loop."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fedsilo.store.redact import scrub

log = logging.getLogger(__name__)

ATTEMPTS = 3     # tries of a write before it is kept for later
PAUSE = 0.25     # seconds before the first retry, doubled before each next one


def transient(error: BaseException) -> bool:
    """Whether `error` may pass by itself (worth keeping the write for later)."""
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeout, OSError)):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def describe(error: BaseException, url: str) -> str:
    """The error's type and the first line of the database's own message: never the SQL
    statement or its parameters (data values), never the URL's password."""
    orig = getattr(error, "orig", None) or error
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    return scrub(f"{type(orig).__name__}: {first}" if first else type(orig).__name__, url)


class SafeWriter:
    """Args:
        url: the store's URL (for messages; its password is never shown).
        attempts: tries of a write while the store was working.
        pause: seconds before the first retry.
        explain: how an error is told (default `describe(error, url)`); give
            `RunStore.describe` when `url` is already redacted, so that the real password is
            what gets scrubbed.
    """

    def __init__(self, url: str, attempts: int = ATTEMPTS, pause: float = PAUSE,
                 explain: Callable[[BaseException], str] | None = None) -> None:
        self.url, self.attempts, self.pause = url, attempts, pause
        self.explain = explain or (lambda error: describe(error, url))
        self.pending: deque[tuple[str, Callable[[], None]]] = deque()
        self.dropped: list[str] = []

    def __call__(self, what: str, write: Callable[[], None]) -> bool:
        """Queue `write` (described as `what`) and write everything queued; True if all of it
        is in the store now."""
        failing = bool(self.pending)  # already failing: one try each, no waiting per round
        self.pending.append((what, write))
        return self.drain(1 if failing else self.attempts)

    def drain(self, attempts: int | None = None) -> bool:
        """Write what is queued, oldest first; stop at the first write that still fails."""
        kept = len(self.pending)
        while self.pending:
            what, write = self.pending[0]
            error = self._try(write, attempts or self.attempts)
            if error is not None and transient(error):
                log.warning("run store %s: could not write %s (%s); kept in memory with %d "
                            "later write(s), tried again with the next one", self.url, what,
                            self.explain(error), len(self.pending) - 1)
                return False
            self.pending.popleft()
            if error is not None:
                self.dropped.append(what)
                log.error("run store %s: %s refused (%s): not recorded", self.url, what,
                          self.explain(error))
        if kept > 1:
            log.warning("run store %s: %d kept write(s) recorded", self.url, kept)
        return True

    def _try(self, write: Callable[[], None], attempts: int) -> Exception | None:
        error: Exception | None = None
        for i in range(attempts):
            if i:
                time.sleep(self.pause * 2 ** (i - 1))
            try:
                write()
                return None
            except Exception as e:  # noqa: BLE001 (a store must never stop the run)
                error = e
                if not transient(e):
                    break
        return error

    def lost(self) -> list[str]:
        """What could not be recorded: refused writes, and writes still queued."""
        return self.dropped + [what for what, _ in self.pending]
