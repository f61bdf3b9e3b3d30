"""FedDyn (Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021,
Algorithm 1): both halves.

Institution k, asked in round t with the global model θ^{t-1}, minimises
    L_k(θ) - <∇L_k(θ_k^{t-1}), θ> + (α/2) ||θ - θ^{t-1}||²
by local training, then updates its gradient state ∇L_k(θ_k^t) = ∇L_k(θ_k^{t-1}) -
α (θ_k^t - θ^{t-1}) (zero before its first round; it never leaves the institution and is
kept in its private state across rounds). The server keeps h:
    h^t = h^{t-1} - α (1/m) Σ_{k∈P} (θ_k^t - θ^{t-1}),   θ^t = (1/|P|) Σ_{k∈P} θ_k^t - h^t / α,
P the institutions that answered, m the institutions available. As pseudo-gradient of a
server SGD step of 1: g = D + h^t / α, D = (1/|P|) Σ (θ^{t-1} - θ_k^t) the uniform mean of
the replies, so h^t = h^{t-1} + α (|P|/m) D.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from fedsilo.algorithms.base import PlainWork, Strategy
from fedsilo.algorithms.fedavg import (
    ClientHalf,
    HyperParams,
    WorkResult,
    default_aggregator,
    fedavg,
    model_delta,
)
from fedsilo.core.params import Params, global_norm
from fedsilo.core.trainer import Regularizer, TrainConfig, Trainer
from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.optim import sgd

ALPHA = "feddyn_alpha"  # the task config's α
GRADIENT_STATE = "feddyn_grad"  # the institution's ∇L_k(θ_k^{t-1}) in its private state


class FedDynParams(HyperParams):
    alpha: float = Field(default=0.01, gt=0)  # α: the dynamic regulariser's weight


def feddyn_client(trainer: Trainer, params: Params, config: dict[str, Any],
                  rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Local training on the FedDyn objective (its gradient: ∇L_k(θ) - ∇L_k(θ_k^{t-1}) +
    α (θ - θ^{t-1})); returns θ^{t-1} - θ_k^t and updates the gradient state.

    Raises:
        ProtocolError: the task carries no α > 0.
    """
    alpha = float(config.get(ALPHA, 0.0))
    if not alpha > 0:
        raise ProtocolError(f"feddyn: the task must carry {ALPHA} > 0")
    cfg = TrainConfig.from_mapping(config)
    grad = state.get(GRADIENT_STATE) or {n: np.zeros_like(a) for n, a in params.items()}
    new, n, metrics = trainer.fit(params, cfg, rng,
                                  Regularizer(alpha, params, {k: -g for k, g in grad.items()}))
    delta = model_delta(params, new)  # θ^{t-1} - θ_k^t
    state[GRADIENT_STATE] = {k: (grad[k] + alpha * delta[k]).astype(grad[k].dtype)
                             for k in grad}
    return delta, n, metrics


FEDDYN_CLIENT = ClientHalf("feddyn", feddyn_client)


@dataclass(frozen=True)
class DynWork(PlainWork):
    """The server half of FedDyn's client work; its state is h."""

    name: str = FEDDYN_CLIENT.name
    alpha: float = 0.01

    def init(self, params: Params) -> Params:
        return {n: np.zeros_like(p) for n, p in params.items()}

    def apply(self, state: Params, aggregate: Params, participants: int,
              population: int) -> tuple[Params, Params, dict[str, float]]:
        share = self.alpha * participants / max(population, participants)
        h = {n: (state[n] + share * aggregate[n]).astype(state[n].dtype) for n in state}
        step = {n: (aggregate[n] + h[n] / self.alpha).astype(aggregate[n].dtype) for n in h}
        return step, h, {"feddyn_h_norm": global_norm(h)}


def feddyn(client_config: Mapping[str, Any], *, alpha: float = 0.01, weighted: bool = False,
           **kw: Any) -> Strategy:
    """FedDyn with regulariser weight `alpha` (α > 0); uniform means as in the paper
    (`weighted`: the example-weighted variant).

    Raises:
        ConfigError: alpha not positive.
    """
    if not alpha > 0:
        raise ConfigError(f"feddyn: alpha must be > 0, got {alpha}")
    aggregator = kw.pop("aggregator", None) or default_aggregator(weighted)
    return fedavg({**client_config, ALPHA: float(alpha)}, optimizer=sgd(1.0), name="feddyn",
                  work=DynWork(alpha=float(alpha)), aggregator=aggregator, **kw)
