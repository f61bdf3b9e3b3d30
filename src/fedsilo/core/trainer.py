"""The Trainer contract and the training settings a task carries (the built-in trainers live
in client/, what they share in client/training.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from fedsilo.core.params import Params
from fedsilo.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Local training settings. Exactly one of `epochs` and `steps` is set."""

    epochs: int | None = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    dp_local: Mapping[str, Any] | None = None  # sample-level DP-SGD settings (client/dp_sgd)

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(f"client: set exactly one of epochs and steps "
                              f"(got epochs={self.epochs}, steps={self.steps})")
        if (self.epochs or self.steps or 0) < 1:
            raise ConfigError("client: epochs/steps must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"client: batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"client: lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"client: optimizer must be one of {OPTIMIZERS}, "
                              f"got '{self.optimizer}'")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in known})


@dataclass(frozen=True)
class Regularizer:
    """Terms added to every local gradient: μ (w - anchor) (FedProx's proximal term, Ditto's
    pull towards the global model) and a constant `correction` (SCAFFOLD's c - c_i)."""

    mu: float = 0.0
    anchor: Params | None = None
    correction: Params | None = None

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ConfigError(f"proximal term: mu must be >= 0, got {self.mu}")
        if self.mu > 0 and self.anchor is None:
            raise ConfigError("proximal term: mu > 0 needs an anchor (the global model)")


class Trainer(Protocol):
    """Trains and evaluates one model on one institution's data."""

    def initial_params(self) -> Params: ...

    def fit(self, params: Params, cfg: TrainConfig, rng: np.random.Generator,
            reg: Regularizer | None = None) -> tuple[Params, int, dict[str, float]]: ...

    def gradient(self, params: Params) -> tuple[Params, int, dict[str, float]]: ...

    def evaluate(self, params: Params) -> tuple[int, dict[str, float]]: ...

    def predict(self, params: Params, x: np.ndarray) -> np.ndarray: ...
