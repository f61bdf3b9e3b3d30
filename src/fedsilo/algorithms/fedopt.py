"""Adaptive and momentum server optimizers on FedAvg's deltas (Reddi et al., "Adaptive
Federated Optimization", ICLR 2021; Hsu et al. 2019 for FedAvgM): FedAvg's client work and
aggregator, another server optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.optim import adagrad, adam, sgd, yogi


def fedadam(client_config: Mapping[str, Any], *, server_lr: float = 0.01, beta1: float = 0.9,
            beta2: float = 0.999, eps: float = 1e-8, **kw: Any) -> Strategy:
    """FedAvg with Adam on the server (pair with client optimizer 'adam' for Adam/Adam)."""
    return fedavg(client_config, optimizer=adam(server_lr, beta1, beta2, eps), name="fedadam",
                  **kw)


def fedyogi(client_config: Mapping[str, Any], *, server_lr: float = 0.01, beta1: float = 0.9,
            beta2: float = 0.99, tau: float = 1e-3, **kw: Any) -> Strategy:
    """FedAvg with Yogi on the server."""
    return fedavg(client_config, optimizer=yogi(server_lr, beta1, beta2, tau), name="fedyogi",
                  **kw)


def fedadagrad(client_config: Mapping[str, Any], *, server_lr: float = 0.1, beta1: float = 0.0,
               tau: float = 1e-3, **kw: Any) -> Strategy:
    """FedAvg with Adagrad on the server."""
    return fedavg(client_config, optimizer=adagrad(server_lr, beta1, tau), name="fedadagrad",
                  **kw)


def fedavgm(client_config: Mapping[str, Any], *, server_lr: float = 1.0,
            momentum: float = 0.9, **kw: Any) -> Strategy:
    """FedAvg with heavy-ball momentum on the server."""
    return fedavg(client_config, optimizer=sgd(server_lr, momentum), name="fedavgm", **kw)
