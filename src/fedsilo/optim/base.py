"""The server-optimizer contract.

The aggregate the server receives is a pseudo-gradient g (descent direction: for local training
g = θ - mean(θ_i), for gradient work g = mean(∇θ_i)). An optimizer turns g into a step that is
*added* to the parameters (optax convention): θ ← θ + step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedsilo.core.params import Params
from fedsilo.errors import ConfigError


@dataclass(frozen=True)
class OptState:
    """Optimizer state: a step count and named slots (e.g. 'm', 'v'), each a Params."""

    count: int = 0
    slots: Mapping[str, Params] = field(default_factory=dict)


class ServerOptimizer(Protocol):
    @property
    def name(self) -> str: ...

    def init(self, params: Params) -> OptState: ...

    def update(self, grad: Params, state: OptState, params: Params) -> tuple[Params, OptState]: ...


def check_hyper(optimizer: str, lr: float, betas: Mapping[str, float],
                positive: Mapping[str, float]) -> None:
    """lr > 0, each beta in [0, 1), each of `positive` > 0.

    Raises:
        ConfigError: naming the optimizer, the hyper-parameter and the value found.
    """
    if not lr > 0:
        raise ConfigError(f"server optimizer {optimizer}: lr must be > 0, got {lr}")
    for key, beta in betas.items():
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"server optimizer {optimizer}: {key} must be in [0, 1), "
                              f"got {beta}")
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"server optimizer {optimizer}: {key} must be > 0, got {value}")


@dataclass(frozen=True)
class Scaled:
    """`inner` applied to factor · g (e.g. a secure FedBuff group's staleness weight)."""

    inner: ServerOptimizer
    factor: float
    name: str = "scaled"

    def init(self, params: Params) -> OptState:
        return self.inner.init(params)

    def update(self, grad: Params, state: OptState, params: Params) -> tuple[Params, OptState]:
        return self.inner.update({n: g * self.factor for n, g in grad.items()}, state, params)


def apply_step(params: Params, step: Mapping[str, np.ndarray]) -> Params:
    """θ + step, keeping each parameter's dtype."""
    return {n: np.asarray(p + step[n]).astype(p.dtype, copy=False)  # 0-d stays an array
            for n, p in params.items()}
