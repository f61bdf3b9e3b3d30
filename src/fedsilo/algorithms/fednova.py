"""FedNova (Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization", NeurIPS 2020): both halves.

Institutions doing unequal amounts of local work (more data, more epochs, stragglers) pull
FedAvg towards the objectives of those who did more. FedNova averages normalised updates:
each institution sends d_i = Δ_i / a_i and a_i (its effective number of local steps); the
server applies θ ← θ - η τ_eff Σ p_i d_i with τ_eff = Σ p_i a_i, p_i = n_i / n (the
example-weighted mean the aggregator already computes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from fedsilo.algorithms.base import PlainWork, Strategy
from fedsilo.algorithms.fedavg import ClientHalf, HyperParams, WorkResult, fedavg, model_delta
from fedsilo.core.params import ArraySpec, Params, ParamSpec
from fedsilo.core.side_values import NOVA_TAU
from fedsilo.core.trainer import TrainConfig, Trainer
from fedsilo.errors import ConfigError
from fedsilo.optim import sgd


class FedNovaParams(HyperParams):
    server_lr: float = Field(default=1.0, gt=0)


def fednova_client(trainer: Trainer, params: Params, config: dict[str, Any],
                   rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Local training, then d_i = (θ - θ_i) / a_i and a_i, where a_i = τ_i for plain SGD and
    a_i = (τ_i - ρ(1-ρ^τ_i)/(1-ρ)) / (1-ρ) with momentum ρ (FedNova, eq. 9)."""
    cfg = TrainConfig.from_mapping(config)
    new, n, metrics = trainer.fit(params, cfg, rng)
    tau, rho = metrics["local_steps"], cfg.momentum
    if cfg.optimizer != "sgd":
        raise ConfigError("fednova: the normalisation is defined for local SGD (with or "
                          "without momentum), not for client optimizer 'adam'")
    a = tau if rho == 0 else (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
    delta = model_delta(params, new)
    normalised = {k: np.divide(d, a, out=d, casting="unsafe") for k, d in delta.items()}
    metrics = {**metrics, "fednova_a": a}
    return {**normalised, NOVA_TAU: np.array([a], dtype=np.float64)}, n, metrics


FEDNOVA_CLIENT = ClientHalf("fednova", fednova_client, NOVA_TAU)


@dataclass(frozen=True)
class NovaWork(PlainWork):
    """The server half of FedNova's client work (stateless): replies carry a_i as well."""

    name: str = FEDNOVA_CLIENT.name

    def aux_spec(self, spec: ParamSpec) -> ParamSpec:
        """a_i: summed with the update's weights, never clipped nor noised by DP."""
        return {NOVA_TAU: ArraySpec((1,), np.dtype(np.float64))}

    def apply(self, state: Any, aggregate: Params, participants: int,
              population: int) -> tuple[Params, Any, dict[str, float]]:
        tau_eff = float(aggregate[NOVA_TAU][0])
        step = {n: np.multiply(d, tau_eff, out=d, casting="unsafe")
                for n, d in aggregate.items() if n != NOVA_TAU}
        return step, None, {"tau_eff": tau_eff}


def fednova(client_config: Mapping[str, Any], *, server_lr: float = 1.0,
            **kw: Any) -> Strategy:
    """FedNova with global step size `server_lr`."""
    return fedavg(client_config, optimizer=sgd(server_lr), name="fednova", work=NovaWork(),
                  **kw)
