"""Adaptive and momentum server optimizers on FedAvg's deltas (Reddi et al., "Adaptive
Federated Optimization", ICLR 2021; Hsu et al. 2019 for FedAvgM): FedAvg's client work and
aggregator, another server optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import HyperParams, fedavg
from fedsilo.optim import adagrad, adam, sgd, yogi


class FedAdamParams(HyperParams):
    server_lr: float = Field(default=0.01, gt=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)


class FedYogiParams(HyperParams):
    server_lr: float = Field(default=0.01, gt=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)


class FedAdagradParams(HyperParams):
    server_lr: float = Field(default=0.1, gt=0)
    beta1: float = Field(default=0.0, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)


class FedAvgMParams(HyperParams):
    server_lr: float = Field(default=1.0, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)


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
