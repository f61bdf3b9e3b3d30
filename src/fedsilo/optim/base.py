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


def apply_step(params: Params, step: Mapping[str, np.ndarray]) -> Params:
    """θ + step, keeping each parameter's dtype."""
    return {n: (p + step[n]).astype(p.dtype, copy=False) for n, p in params.items()}
