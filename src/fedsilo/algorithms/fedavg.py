"""FedAvg, FedSGD and FedProx: both halves, and what every local-training algorithm shares.

- FedAvg (McMahan et al., AISTATS 2017): local training, example-weighted mean of the model
  deltas, server SGD with lr 1 (so θ' is the weighted mean of the clients' models).
- FedSGD: each institution sends its full-batch gradient; θ ← θ − α · mean_i ∇θ_i, uniform
  (1/K) or example-weighted.
- FedProx (Li et al., MLSys 2020): FedAvg whose local objective adds μ/2 ||w − θ||²; with
  stragglers it folds in their partial work instead of dropping them. μ = 0 is FedAvg.

Client halves return a pseudo-gradient in the descent direction (g_i = θ - θ_i after local
training; ∇L_i(θ) for FedSGD), so that one server rule, θ ← θ + optimizer(g), covers them
all. Shared here with the other algorithm modules: `HyperParams` (the base of every
strategy's typed hyper-parameters), `ClientHalf` (a client work by name) and `model_delta`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.aggregation.base import Layer
from fedsilo.algorithms.base import PlainWork, Strategy, WorkRule
from fedsilo.algorithms.sampling import Stragglers, UniformSampler
from fedsilo.core.params import Params
from fedsilo.core.trainer import Regularizer, TrainConfig, Trainer
from fedsilo.errors import ConfigError
from fedsilo.optim import sgd
from fedsilo.optim.base import ServerOptimizer

WorkResult = tuple[Params, int, dict[str, float]]
# (trainer, task params, task config, rng, the institution's private state) -> result
ClientWork = Callable[[Trainer, Params, dict[str, Any], np.random.Generator, dict[str, Any]],
                      WorkResult]


@dataclass(frozen=True)
class ClientHalf:
    """What an institution runs for a fit task whose config names `name` as its work.

    `aux_prefix`: the names of the side values its replies carry besides the model update
    start with it (they are summed, never clipped nor noised)."""

    name: str
    run: ClientWork
    aux_prefix: str | None = None


class HyperParams(BaseModel):
    """A strategy's hyper-parameters, as the flat [strategy] section gives them (the common
    keys excepted); a key the strategy does not take is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FedAvgParams(HyperParams):
    """FedAvg takes only the common keys."""


class FedProxParams(HyperParams):
    mu: float = Field(default=0.01, ge=0)


class FedSgdParams(HyperParams):
    server_lr: float | None = Field(default=None, gt=0)  # None: the client lr


def model_delta(params: Params, new: Params) -> Params:
    """θ - θ_local (descent-signed), reusing the trainer's fresh arrays where it can."""
    delta = {}
    for k, p in params.items():
        out = new[k]
        if out is p or out.dtype != p.dtype or not out.flags.writeable:
            delta[k] = (p - out).astype(p.dtype, copy=False)
        else:  # the trainer handed us fresh arrays: reuse them (no 2nd model in memory)
            delta[k] = np.subtract(p, out, out=out)
    return delta


def local_training(trainer: Trainer, params: Params, config: dict[str, Any],
                   rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Train locally (with FedProx's proximal term if `prox_mu` > 0), return θ - θ_local."""
    mu = float(config.get("prox_mu", 0.0))
    cfg = TrainConfig.from_mapping(config)
    if mu > 0:
        new, n, metrics = trainer.fit(params, cfg, rng, Regularizer(mu, params))
    else:  # a trainer written before regularizers existed still works
        new, n, metrics = trainer.fit(params, cfg, rng)
    return model_delta(params, new), n, metrics


def gradient(trainer: Trainer, params: Params, config: dict[str, Any],
             rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Return the full-batch gradient of the local loss at θ (FedSGD)."""
    return trainer.gradient(params)


LOCAL_TRAINING = ClientHalf("local_training", local_training)
GRADIENT = ClientHalf("gradient", gradient)


def default_aggregator(weighted: bool = True) -> Layer:
    """FedAvg's aggregator: WeightedMean(inner=PlainSum())."""
    return WeightedMean(PlainSum(), weighted=weighted)


def fedavg(client_config: Mapping[str, Any], *, fraction: float = 1.0, min_clients: int = 1,
           weighted: bool = True, aggregator: Layer | None = None,
           optimizer: ServerOptimizer | None = None, name: str = "fedavg",
           work: WorkRule | None = None, stragglers: Stragglers | None = None) -> Strategy:
    """Local training on the cohort, weighted mean of deltas, then `optimizer` (default SGD lr 1).

    Every local-training strategy (FedAvgM, FedAdam, FedYogi, FedProx, SCAFFOLD, FedNova,
    FedDyn) is this builder with another optimizer, client work or straggler policy.
    """
    return Strategy(name=name, sampler=UniformSampler(fraction, min_clients),
                    work=work or PlainWork(LOCAL_TRAINING.name),
                    client_config=dict(client_config),
                    aggregator=aggregator or default_aggregator(weighted),
                    optimizer=optimizer or sgd(1.0), min_replies=min_clients,
                    stragglers=stragglers)


def fedprox(client_config: Mapping[str, Any], *, mu: float = 0.01, **kw: Any) -> Strategy:
    """FedAvg with the proximal term μ/2 ||w − θ||² in every institution's local objective.

    Raises:
        ConfigError: mu negative.
    """
    if mu < 0:
        raise ConfigError(f"fedprox: mu must be >= 0, got {mu}")
    return fedavg({**client_config, "prox_mu": float(mu)}, name="fedprox", **kw)


def fedsgd(lr: float, *, fraction: float = 1.0, min_clients: int = 1, weighted: bool = False,
           aggregator: Layer | None = None, optimizer: ServerOptimizer | None = None) -> Strategy:
    """Gradient averaging: θ ← θ − lr · (1/K) Σ ∇θ_i (or example-weighted with `weighted`).

    `optimizer` replaces plain SGD (e.g. Adam on the averaged gradient).
    """
    return Strategy(name="fedsgd", sampler=UniformSampler(fraction, min_clients),
                    work=PlainWork(GRADIENT.name), client_config={},
                    aggregator=aggregator or default_aggregator(weighted),
                    optimizer=optimizer or sgd(lr), min_replies=min_clients)


def fedsgd_from_config(client_config: Mapping[str, Any], *, server_lr: float | None = None,
                       stragglers: Stragglers | None = None, **kw: Any) -> Strategy:
    """FedSGD as [strategy] builds it: step size `server_lr`, by default the [client] lr; a
    gradient has no local work to cut, so `stragglers` do not apply."""
    return fedsgd(server_lr or float(client_config["lr"]), **kw)
