"""Round events: the one place that feeds progress display, history, store and audit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedsilo.core.messages import Signed


@dataclass(frozen=True)
class RoundEvent:
    """What happened in one round, with metrics nested by part."""

    round: int
    version: int
    participants: tuple[str, ...]
    rejected: Mapping[str, str]
    metrics: Mapping[str, Any]
    evaluation: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    federated: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    digests: Mapping[str, str] = field(default_factory=dict)  # SHA-256 of each update received
    model_digest: str = ""                                     # SHA-256 of the global model
    signed: Mapping[str, Signed] = field(default_factory=dict)  # institutions' signatures


Listener = Callable[[RoundEvent], None]


class EventBus:
    """Publishes each event to every subscribed listener, in subscription order."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: RoundEvent) -> None:
        for listener in self._listeners:
            listener(event)
