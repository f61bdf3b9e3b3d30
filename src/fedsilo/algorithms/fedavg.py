"""FedAvg and FedSGD builders.

- FedAvg (McMahan et al., AISTATS 2017): local training, example-weighted mean of the model
  deltas, server SGD with lr 1 (so θ' is the weighted mean of the clients' models).
- FedSGD: each institution sends its full-batch gradient; θ ← θ − α · mean_i ∇θ_i, uniform
  (1/K) or example-weighted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.aggregation.base import Layer
from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.sampling import UniformSampler
from fedsilo.optim import sgd
from fedsilo.optim.base import ServerOptimizer


def default_aggregator(weighted: bool = True) -> Layer:
    """FedAvg's aggregator: WeightedMean(inner=PlainSum())."""
    return WeightedMean(PlainSum(), weighted=weighted)


def fedavg(client_config: Mapping[str, Any], *, fraction: float = 1.0, min_clients: int = 1,
           weighted: bool = True, aggregator: Layer | None = None,
           optimizer: ServerOptimizer | None = None, name: str = "fedavg") -> Strategy:
    """Local training on the cohort, weighted mean of deltas, then `optimizer` (default SGD lr 1).

    Every local-training strategy with a server optimizer (FedAvgM, FedAdam) is this builder
    with another optimizer.
    """
    return Strategy(name=name, sampler=UniformSampler(fraction, min_clients),
                    work="local_training", client_config=dict(client_config),
                    aggregator=aggregator or default_aggregator(weighted),
                    optimizer=optimizer or sgd(1.0), min_replies=min_clients)


def fedsgd(lr: float, *, fraction: float = 1.0, min_clients: int = 1, weighted: bool = False,
           aggregator: Layer | None = None, optimizer: ServerOptimizer | None = None) -> Strategy:
    """Gradient averaging: θ ← θ − lr · (1/K) Σ ∇θ_i (or example-weighted with `weighted`).

    `optimizer` replaces plain SGD (e.g. Adam on the averaged gradient).
    """
    return Strategy(name="fedsgd", sampler=UniformSampler(fraction, min_clients),
                    work="gradient", client_config={},
                    aggregator=aggregator or default_aggregator(weighted),
                    optimizer=optimizer or sgd(lr), min_replies=min_clients)
