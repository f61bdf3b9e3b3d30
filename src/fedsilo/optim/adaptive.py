"""FedAdagrad and FedYogi server optimizers (Reddi et al., "Adaptive Federated Optimization",
ICLR 2021, Algorithm 2), in the paper's form: no bias correction, v starts at τ², and τ is
the adaptivity constant in the denominator.

With g the aggregated pseudo-gradient (descent direction, g = -Δ in the paper):
    m ← β1 m + (1-β1) g
    Adagrad: v ← v + g²
    Yogi:    v ← v - (1-β2) g² sign(v - g²)
    step = -η m / (√v + τ)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.core.params import Params
from fedsilo.optim.base import OptState, check_hyper


@dataclass(frozen=True)
class _Adaptive:
    lr: float
    beta1: float
    beta2: float
    tau: float
    name: str

    def init(self, params: Params) -> OptState:
        m = {n: np.zeros_like(p) for n, p in params.items()}
        v = {n: np.full_like(p, self.tau**2) for n, p in params.items()}
        return OptState(0, {"m": m, "v": v})

    def update(self, grad: Params, state: OptState, params: Params) -> tuple[Params, OptState]:
        m = {n: self.beta1 * m + (1 - self.beta1) * grad[n] for n, m in state.slots["m"].items()}
        v = {n: self._second_moment(v, grad[n] ** 2) for n, v in state.slots["v"].items()}
        step = {n: -self.lr * m[n] / (np.sqrt(v[n]) + self.tau) for n in m}
        return step, OptState(state.count + 1, {"m": m, "v": v})

    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        if self.name == "adagrad":
            return v + g2
        return v - (1 - self.beta2) * g2 * np.sign(v - g2)


def _checked(name: str, lr: float, beta1: float, beta2: float, tau: float) -> _Adaptive:
    check_hyper(name, lr, {"beta1": beta1, "beta2": beta2}, {"tau": tau})
    return _Adaptive(float(lr), float(beta1), float(beta2), float(tau), name)


def adagrad(lr: float = 0.1, beta1: float = 0.0, tau: float = 1e-3) -> _Adaptive:
    """Server Adagrad (FedAdagrad). Raises ConfigError on a value out of range."""
    return _checked("adagrad", lr, beta1, 0.0, tau)


def yogi(lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
         tau: float = 1e-3) -> _Adaptive:
    """Server Yogi (FedYogi). Raises ConfigError on a value out of range."""
    return _checked("yogi", lr, beta1, beta2, tau)
