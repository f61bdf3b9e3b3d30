"""SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020, Algorithm 1 with option II): both halves.

The server keeps the control variate c and sends it with the model; each institution keeps
its own c_i (it never leaves) and corrects every local step by c - c_i. Replies carry
Δy_i = θ - y_i and Δc_i; the server applies θ ← θ - η_g mean(Δy_i) and
c ← c + (|S|/N) mean(Δc_i), N the institutions available. Institutions not sampled keep c_i,
so c stays the mean of all c_i. Means are uniform, as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import ClientHalf, HyperParams, WorkResult, fedavg, model_delta
from fedsilo.core.params import Params, ParamSpec, global_norm, prefixed, split_prefixed
from fedsilo.core.side_values import CONTROL
from fedsilo.core.trainer import Regularizer, TrainConfig, Trainer
from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.optim import sgd


class ScaffoldParams(HyperParams):
    server_lr: float = Field(default=1.0, gt=0)  # η_g


def scaffold_client(trainer: Trainer, params: Params, config: dict[str, Any],
                    rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """K local SGD steps on ∇L_i(y) - c_i + c, then (option II)
    c_i⁺ = c_i - c + (θ - y) / (K η_l); returns θ - y and Δc_i = c_i⁺ - c_i. c_i is kept in
    `state["scaffold_c"]`.

    Raises:
        ProtocolError: the task carries no server control variate.
        ConfigError: a client optimizer other than plain SGD.
    """
    model, c = split_prefixed(params, CONTROL)
    if set(c) != set(model):
        raise ProtocolError("scaffold: the task must carry the server control variate for "
                            "every parameter")
    cfg = TrainConfig.from_mapping(config)
    if cfg.optimizer != "sgd" or cfg.momentum:
        raise ConfigError("scaffold: the control-variate update assumes plain local SGD "
                          "(client optimizer 'sgd', momentum 0)")
    ci = state.get("scaffold_c") or {n: np.zeros_like(a) for n, a in c.items()}
    correction = {n: c[n] - ci[n] for n in c}
    new, n, metrics = trainer.fit(model, cfg, rng, Regularizer(correction=correction))
    delta = model_delta(model, new)
    k_lr = metrics["local_steps"] * cfg.lr
    ci_new = {k: (ci[k] - c[k] + delta[k] / k_lr).astype(c[k].dtype) for k in c}
    state["scaffold_c"] = ci_new
    return {**delta, **prefixed({k: ci_new[k] - ci[k] for k in c}, CONTROL)}, n, metrics


SCAFFOLD_CLIENT = ClientHalf("scaffold", scaffold_client, CONTROL)


@dataclass(frozen=True)
class ScaffoldWork:
    """The server half of SCAFFOLD's client work; its state is the control variate c."""

    name: str = SCAFFOLD_CLIENT.name

    def init(self, params: Params) -> Params:
        return {n: np.zeros_like(p) for n, p in params.items()}

    def task_params(self, state: Params, params: Params) -> Params:
        return {**params, **prefixed(state, CONTROL)}

    def aux_spec(self, spec: ParamSpec) -> ParamSpec:
        """Δc_i: averaged like the update, never clipped nor noised by DP."""
        return {CONTROL + n: a for n, a in spec.items()}

    def update_spec(self, spec: ParamSpec) -> ParamSpec:
        return {**spec, **self.aux_spec(spec)}

    def apply(self, state: Params, aggregate: Params, participants: int,
              population: int) -> tuple[Params, Params, dict[str, float]]:
        delta, dc = split_prefixed(aggregate, CONTROL)
        share = participants / max(population, participants)
        c = {n: (state[n] + share * dc[n]).astype(state[n].dtype) for n in state}
        return delta, c, {"control_norm": global_norm(c)}


def scaffold(client_config: Mapping[str, Any], *, server_lr: float = 1.0,
             **kw: Any) -> Strategy:
    """SCAFFOLD with global step size `server_lr` (η_g) and uniform means."""
    kw.pop("weighted", None)
    aggregator = kw.pop("aggregator", None) or WeightedMean(PlainSum(), weighted=False)
    return fedavg(client_config, optimizer=sgd(server_lr), name="scaffold", work=ScaffoldWork(),
                  aggregator=aggregator, **kw)
