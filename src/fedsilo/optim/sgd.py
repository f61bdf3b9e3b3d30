"""SGD with optional (heavy-ball) momentum on the server: FedAvg, FedSGD, FedAvgM."""

from __future__ import annotations

from dataclasses import dataclass

from fedsilo.core.params import Params
from fedsilo.errors import ConfigError
from fedsilo.optim.base import OptState


@dataclass(frozen=True)
class _SGD:
    lr: float
    momentum: float
    name: str = "sgd"

    def init(self, params: Params) -> OptState:
        if self.momentum == 0.0:
            return OptState()
        return OptState(slots={"velocity": {n: p * 0 for n, p in params.items()}})

    def update(self, grad: Params, state: OptState, params: Params) -> tuple[Params, OptState]:
        """step = -lr * g, or with momentum v ← β v + g, step = -lr * v."""
        if self.momentum == 0.0:
            return {n: -self.lr * g for n, g in grad.items()}, OptState(state.count + 1)
        velocity = {n: self.momentum * v + grad[n] for n, v in state.slots["velocity"].items()}
        step = {n: -self.lr * v for n, v in velocity.items()}
        return step, OptState(state.count + 1, {"velocity": velocity})


def sgd(lr: float = 1.0, momentum: float = 0.0) -> _SGD:
    """Server SGD. lr=1, momentum=0 on local-training deltas is exactly FedAvg.

    Raises:
        ConfigError: lr not positive or momentum outside [0, 1).
    """
    if not lr > 0:
        raise ConfigError(f"server optimizer: lr must be > 0, got {lr}")
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"server optimizer: momentum must be in [0, 1), got {momentum}")
    return _SGD(float(lr), float(momentum), "momentum" if momentum else "sgd")
