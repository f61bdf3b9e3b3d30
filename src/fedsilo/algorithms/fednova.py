"""FedNova (Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization", NeurIPS 2020).

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

from fedsilo.algorithms.base import PlainWork, Strategy
from fedsilo.algorithms.client_work import NOVA_TAU
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.params import ArraySpec, Params, ParamSpec
from fedsilo.optim import sgd


@dataclass(frozen=True)
class NovaWork(PlainWork):
    """The server half of FedNova's client work (stateless): replies carry a_i as well."""

    name: str = "fednova"

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
