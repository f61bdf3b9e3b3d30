"""FedAvg, FedSGD and FedProx builders.

- FedAvg (McMahan et al., AISTATS 2017): local training, example-weighted mean of the model
  deltas, server SGD with lr 1 (so θ' is the weighted mean of the clients' models).
- FedSGD: each institution sends its full-batch gradient; θ ← θ − α · mean_i ∇θ_i, uniform
  (1/K) or example-weighted.
- FedProx (Li et al., MLSys 2020): FedAvg whose local objective adds μ/2 ||w − θ||²; with
  stragglers it folds in their partial work instead of dropping them. μ = 0 is FedAvg.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.aggregation.base import Layer
from fedsilo.algorithms.base import PlainWork, Strategy, WorkRule
from fedsilo.algorithms.sampling import Stragglers, UniformSampler
from fedsilo.errors import ConfigError
from fedsilo.optim import sgd
from fedsilo.optim.base import ServerOptimizer


def default_aggregator(weighted: bool = True) -> Layer:
    """FedAvg's aggregator: WeightedMean(inner=PlainSum())."""
    return WeightedMean(PlainSum(), weighted=weighted)


def fedavg(client_config: Mapping[str, Any], *, fraction: float = 1.0, min_clients: int = 1,
           weighted: bool = True, aggregator: Layer | None = None,
           optimizer: ServerOptimizer | None = None, name: str = "fedavg",
           work: WorkRule | None = None, stragglers: Stragglers | None = None) -> Strategy:
    """Local training on the cohort, weighted mean of deltas, then `optimizer` (default SGD lr 1).

    Every local-training strategy (FedAvgM, FedAdam, FedYogi, FedProx, SCAFFOLD, FedNova) is
    this builder with another optimizer, client work or straggler policy.
    """
    return Strategy(name=name, sampler=UniformSampler(fraction, min_clients),
                    work=work or PlainWork("local_training"), client_config=dict(client_config),
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
                    work=PlainWork("gradient"), client_config={},
                    aggregator=aggregator or default_aggregator(weighted),
                    optimizer=optimizer or sgd(lr), min_replies=min_clients)
