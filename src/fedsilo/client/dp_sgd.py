"""Local, sample-level differential privacy inside an institution: DP-SGD with Opacus
(per-sample gradients, clipping to `max_grad_norm`, Gaussian noise), Poisson-sampled
batches, and Opacus's RDP accountant.

Each institution has its own (ε, δ): the noise multiplier is calibrated once, by Opacus, for
the whole run it will take part in (rounds × local epochs); its accountant then grows with
every step it actually takes, and once the budget is spent it refuses to train.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.errors import ConfigError, PrivacyBudgetExhausted

# Benign: Opacus's hooks fire on module outputs (inputs need no gradient), and its RDP orders.
warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")


@dataclass(frozen=True)
class LocalDP:
    epsilon: float
    delta: float
    max_grad_norm: float
    rounds: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], institution: str) -> LocalDP:
        """The institution's own budget: `epsilon[institution]`, else `epsilon['*']`."""
        budgets = dict(cfg.get("epsilon", {}))
        epsilon = budgets.get(institution, budgets.get("*"))
        if epsilon is None:
            raise ConfigError(f"local DP: no epsilon for institution '{institution}' (set "
                              f"privacy.local_epsilon['{institution}'] or ['*'])")
        return cls(float(epsilon), float(cfg["delta"]), float(cfg["max_grad_norm"]),
                   int(cfg["rounds"]))


class DPSGD:
    """Per-institution DP-SGD state: the calibrated noise and the running accountant."""

    def __init__(self, spec: LocalDP, n: int, batch_size: int, epochs: int) -> None:
        self.spec = spec
        self.sample_rate = min(1.0, batch_size / n)
        steps_per_epoch = max(1, math.ceil(1 / self.sample_rate))
        self.steps_per_fit = epochs * steps_per_epoch
        from opacus.accountants import RDPAccountant  # Opacus (~110 MB) only when DP-SGD runs
        from opacus.accountants.utils import get_noise_multiplier

        self.noise_multiplier = get_noise_multiplier(
            target_epsilon=spec.epsilon, target_delta=spec.delta, sample_rate=self.sample_rate,
            steps=self.steps_per_fit * spec.rounds, accountant="rdp")
        self.accountant = RDPAccountant()

    @property
    def epsilon(self) -> float:
        return float(self.accountant.get_epsilon(self.spec.delta)) if self.accountant.history \
            else 0.0

    def epsilon_after(self, steps: int) -> float:
        """ε if `steps` more steps were taken (the budget check looks ahead)."""
        from opacus.accountants import RDPAccountant

        future = RDPAccountant()
        future.history = [*self.accountant.history,
                          (self.noise_multiplier, self.sample_rate, steps)]
        return float(future.get_epsilon(self.spec.delta))

    def fit(self, model: nn.Module, make_optimizer: Callable[..., torch.optim.Optimizer],
            objective: Callable[[nn.Module, torch.Tensor], torch.Tensor], n: int,
            rng: np.random.Generator) -> tuple[float, int]:
        """One local fit. Returns (mean loss, examples used)."""
        after = self.epsilon_after(self.steps_per_fit)
        if after > self.spec.epsilon * 1.001:
            raise PrivacyBudgetExhausted(f"local DP: another fit would bring ε to {after:.3g}, "
                                         f"over the budget {self.spec.epsilon} (spent "
                                         f"{self.epsilon:.3g}); not training further")
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        wrapped = GradSampleModule(model)
        try:
            optimizer = DPOptimizer(make_optimizer(wrapped.parameters()),
                                    noise_multiplier=self.noise_multiplier,
                                    max_grad_norm=self.spec.max_grad_norm,
                                    expected_batch_size=max(1, round(self.sample_rate * n)))
            total, used = 0.0, 0
            for _ in range(self.steps_per_fit):
                idx = np.flatnonzero(rng.random(n) < self.sample_rate)  # Poisson sampling
                self.accountant.step(noise_multiplier=self.noise_multiplier,
                                     sample_rate=self.sample_rate)
                if idx.size == 0:  # nothing sampled: nothing released this step
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss = objective(wrapped, torch.from_numpy(idx))
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * idx.size
                used += idx.size
            return total / max(used, 1), used
        finally:
            wrapped._close()
