"""Adaptive and momentum server optimizers on FedAvg's deltas (Reddi et al., ICLR 2021;
Hsu et al. 2019 for FedAvgM): FedAvg's client work and aggregator, another server optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.optim import adam, sgd


def fedadam(client_config: Mapping[str, Any], *, server_lr: float = 0.01, beta1: float = 0.9,
            beta2: float = 0.999, eps: float = 1e-8, **kw: Any) -> Strategy:
    """FedAvg with Adam on the server (pair with client optimizer 'adam' for Adam/Adam)."""
    return fedavg(client_config, optimizer=adam(server_lr, beta1, beta2, eps), name="fedadam",
                  **kw)


def fedavgm(client_config: Mapping[str, Any], *, server_lr: float = 1.0,
            momentum: float = 0.9, **kw: Any) -> Strategy:
    """FedAvg with heavy-ball momentum on the server."""
    return fedavg(client_config, optimizer=sgd(server_lr, momentum), name="fedavgm", **kw)
