"""SCAFFOLD (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020, Algorithm 1 with option II).

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

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.client_work import CONTROL
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.params import Params, ParamSpec, global_norm, prefixed, split_prefixed
from fedsilo.optim import sgd


@dataclass(frozen=True)
class ScaffoldWork:
    """The server half of SCAFFOLD's client work; its state is the control variate c."""

    name: str = "scaffold"

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
