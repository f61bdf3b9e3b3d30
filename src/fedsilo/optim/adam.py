"""Adam on the server (FedAdam, Reddi et al., "Adaptive Federated Optimization", ICLR 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.core.params import Params
from fedsilo.optim.base import OptState, check_hyper


@dataclass(frozen=True)
class _Adam:
    lr: float
    beta1: float
    beta2: float
    eps: float
    name: str = "adam"

    def init(self, params: Params) -> OptState:
        zeros = {n: np.zeros_like(p) for n, p in params.items()}
        return OptState(0, {"m": zeros, "v": {n: z.copy() for n, z in zeros.items()}})

    def update(self, grad: Params, state: OptState, params: Params) -> tuple[Params, OptState]:
        """m ← β1 m + (1-β1) g; v ← β2 v + (1-β2) g²; step = -lr m̂ / (√v̂ + eps)."""
        t = state.count + 1
        m = {n: self.beta1 * m + (1 - self.beta1) * grad[n] for n, m in state.slots["m"].items()}
        v = {n: self.beta2 * v + (1 - self.beta2) * grad[n] ** 2
             for n, v in state.slots["v"].items()}
        c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
        step = {n: -self.lr * (m[n] / c1) / (np.sqrt(v[n] / c2) + self.eps) for n in m}
        return step, OptState(t, {"m": m, "v": v})


def adam(lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> _Adam:
    """Server Adam with bias correction.

    Raises:
        ConfigError: a hyper-parameter outside its range.
    """
    check_hyper("adam", lr, {"beta1": beta1, "beta2": beta2}, {"eps": eps})
    return _Adam(float(lr), float(beta1), float(beta2), float(eps))
