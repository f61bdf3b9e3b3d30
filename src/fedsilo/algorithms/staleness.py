"""Staleness functions s(τ) for asynchronous FL: how much an update trained on a model τ
versions old still counts (Xie et al., "Asynchronous Federated Optimization", 2019, §5.2).

- constant:   s(τ) = 1
- polynomial: s(τ) = (τ + 1)^(-a)
- hinge:      s(τ) = 1 if τ <= b else 1 / (a (τ - b) + 1)

Every function gives s(0) = 1, so fresh updates count fully.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsilo.errors import ConfigError

KINDS = ("constant", "polynomial", "hinge")


@dataclass(frozen=True)
class Staleness:
    """A staleness function; `a` and `b` as in Xie et al. (defaults: their a = 0.5, b = 4)."""

    kind: str = "polynomial"
    a: float = 0.5
    b: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"staleness: kind must be one of {KINDS}, got '{self.kind}'")
        if self.a < 0 or self.b < 0:
            raise ConfigError(f"staleness: a and b must be >= 0, got a={self.a}, b={self.b}")

    def __call__(self, tau: int) -> float:
        if tau < 0:
            raise ValueError(f"staleness must be >= 0, got {tau}")
        if self.kind == "constant":
            return 1.0
        if self.kind == "polynomial":
            return float((tau + 1.0) ** -self.a)
        return 1.0 if tau <= self.b else 1.0 / (self.a * (tau - self.b) + 1.0)
