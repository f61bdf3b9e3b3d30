"""Fair share of the server: no institution can take what the others need.

Per institution and per method (Pull, Push), a token bucket bounds the calls that bring no
work: a call spends a token when it arrives and gets it back when it delivers a fresh task
(Pull) or answers an open one (Push), so an honest institution, whose calls are its tasks plus
one idle poll per long-poll period, never runs dry however fast the run goes. A call that
finds the bucket empty is refused with RESOURCE_EXHAUSTED and a reason. One Push per
institution is received at a time (a second is refused before its stream is read). Refusals
are logged once per burst, per kind; the burst's count is logged when it ends (the bucket
refilled) or when the server closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: `burst` calls at once, then `per_second` (0: never refills)."""

    burst: int
    per_second: float

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_second < 0:
            raise ValueError(f"a rate needs burst >= 1 and per_second >= 0, got {self}")


@dataclass(frozen=True)
class Limits:
    """What one institution may take of the server.

    Attributes:
        pull, push: token buckets of calls that bring no work (idle or repeated polls,
            replies for no open task, refused calls).
        max_concurrent_rpcs: calls in progress on the whole server, beyond which gRPC refuses
            at once (RESOURCE_EXHAUSTED); None: 4 per project institution, at least 256.
        streams_per_connection: concurrent calls on one connection (HTTP/2 streams); more
            wait on the caller's side, so that many calls cost many TLS connections.
    """

    pull: Rate = field(default_factory=lambda: Rate(30, 2.0))
    push: Rate = field(default_factory=lambda: Rate(30, 2.0))
    max_concurrent_rpcs: int | None = None
    streams_per_connection: int = 16

    def concurrent_rpcs(self, institutions: int) -> int:
        return self.max_concurrent_rpcs or max(256, 4 * institutions)


class TokenBucket:
    """`rate.burst` tokens, refilled continuously at `rate.per_second`."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate, self.tokens, self.stamp = rate, float(rate.burst), now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.rate.burst,
                          self.tokens + (now - self.stamp) * self.rate.per_second)
        self.stamp = now

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.rate.burst

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        self.tokens = min(self.rate.burst, self.tokens + 1)


class FairShare:
    """The per-institution limits of one server (thread-safe: called from the event loop's
    Pulls and the thread pool's Pushes)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._bursts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        self._receiving: set[str] = set()

    def admit(self, name: str, method: str) -> str | None:
        """Spend one of `name`'s `method` tokens: None, or why the call is refused."""
        rate = self.limits.pull if method == "Pull" else self.limits.push
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault((name, method), TokenBucket(rate, now))
            if bucket.full(now):  # quiet long enough to refill: any burst is over
                self._end_burst(name, method)
            if bucket.take(now):
                return None
        return self.refused(name, method, "rate limit",
                            f"rate limit: '{name}' made more than {rate.burst} {method} calls "
                            f"that brought no work (refilled at {rate.per_second:g} per "
                            f"second; calls that deliver or answer a task are free); retry "
                            f"later")

    def refund(self, name: str, method: str) -> None:
        """The call delivered a fresh task or answered an open one: its token comes back."""
        with self._lock:
            bucket = self._buckets.get((name, method))
            if bucket is not None:
                bucket.give_back()

    def start_push(self, name: str) -> str | None:
        """Reserve `name`'s one Push: None, or why this one is refused."""
        with self._lock:
            if name not in self._receiving:
                self._receiving.add(name)
                return None
        return self.refused(name, "Push", "busy",
                            f"a Push from '{name}' is already being received: one at a time "
                            f"per institution")

    def end_push(self, name: str) -> None:
        with self._lock:
            self._receiving.discard(name)

    @property
    def receiving(self) -> frozenset[str]:
        """Institutions whose Push is being received now."""
        with self._lock:
            return frozenset(self._receiving)

    def replaced(self, name: str) -> str:
        """Why `name`'s waiting Pull ended: a newer one took its place."""
        return self.refused(name, "Pull", "replaced",
                            f"replaced by a newer Pull from '{name}': one Pull per "
                            f"institution is served (another process with this kit, or a "
                            f"connection that died)")

    def refused(self, name: str, method: str, kind: str, reason: str) -> str:
        """Count a refusal; log it if it is the first of its kind in this burst."""
        with self._lock:
            counts = self._bursts[(name, method)]
            counts[kind] = counts.get(kind, 0) + 1
            first = counts[kind] == 1
        if first:
            log.warning("refusing %s from '%s': %s (further refusals of this burst are "
                        "counted, not logged)", method, name, reason)
        return reason

    def close(self) -> None:
        """Log the counts of the bursts still going on."""
        with self._lock:
            for name, method in list(self._bursts):
                self._end_burst(name, method)

    def _end_burst(self, name: str, method: str) -> None:
        counts = self._bursts.pop((name, method), None)
        if counts:
            log.warning("'%s': %d %s calls refused in that burst (%s)", name,
                        sum(counts.values()), method,
                        ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
