"""Local, sample-level differential privacy inside an institution: DP-SGD with Opacus
(per-sample gradients, clipping to `max_grad_norm`, Gaussian noise), Poisson-sampled
batches, and Opacus's RDP accountant.

Each institution has its own (ε, δ): the noise multiplier is calibrated once, by Opacus, for
the whole run it will take part in (rounds × local epochs); its accountant then grows with
every step it actually takes, and once the budget is spent it refuses to train.

The accountant assumes that nobody outside the institution knows which rows a step sampled
(amplification by subsampling) nor the noise it drew. Both therefore come from a torch
generator seeded with 63 bits of OS entropy (`secrets`) at every fit, never from the run seed
the server sends (from which the server could replay the sampling: at heart-disease settings
a claimed ε = 1 is then about ε = 8 against it). Noise is drawn in Opacus's `secure_mode`
(the sum of several Gaussians, against floating-point attacks). Only `deterministic = true`
(privacy.deterministic_noise, experiments in simulation) seeds the generator from the task's
run-seeded generator; a deployed institution's site policy refuses it by default.
"""

from __future__ import annotations

import math
import secrets
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
    deterministic: bool = False  # sampling and noise from the run seed: simulation only

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], institution: str) -> LocalDP:
        """The institution's own budget: `epsilon[institution]`, else `epsilon['*']`."""
        budgets = dict(cfg.get("epsilon", {}))
        epsilon = budgets.get(institution, budgets.get("*"))
        if epsilon is None:
            raise ConfigError(f"local DP: no epsilon for institution '{institution}' (set "
                              f"privacy.local_epsilon['{institution}'] or ['*'])")
        return cls(float(epsilon), float(cfg["delta"]), float(cfg["max_grad_norm"]),
                   int(cfg["rounds"]), bool(cfg.get("deterministic", False)))


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

    def source(self, rng: np.random.Generator) -> torch.Generator:
        """The source of one fit's Poisson sampling and noise: OS entropy, or `rng` (keyed by
        the run seed, which the server knows) only under `deterministic`."""
        seed = int(rng.integers(2**63)) if self.spec.deterministic else secrets.randbits(63)
        return torch.Generator().manual_seed(seed)

    def fit(self, model: nn.Module, make_optimizer: Callable[..., torch.optim.Optimizer],
            objective: Callable[[nn.Module, torch.Tensor], torch.Tensor], n: int,
            rng: np.random.Generator) -> tuple[float, int]:
        """One local fit. Returns (mean loss, examples used). `rng` is the task's generator,
        used only under `deterministic`."""
        after = self.epsilon_after(self.steps_per_fit)
        if after > self.spec.epsilon * 1.001:
            raise PrivacyBudgetExhausted(f"local DP: another fit would bring ε to {after:.3g}, "
                                         f"over the budget {self.spec.epsilon} (spent "
                                         f"{self.epsilon:.3g}); not training further")
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        source = self.source(rng)
        batches = UniformWithReplacementSampler(num_samples=n, sample_rate=self.sample_rate,
                                                generator=source, steps=self.steps_per_fit)
        wrapped = GradSampleModule(model)
        try:
            optimizer = DPOptimizer(make_optimizer(wrapped.parameters()),
                                    noise_multiplier=self.noise_multiplier,
                                    max_grad_norm=self.spec.max_grad_norm,
                                    expected_batch_size=max(1, round(self.sample_rate * n)),
                                    generator=source, secure_mode=True)
            total, used = 0.0, 0
            for batch in batches:  # Poisson sampling: each row with probability sample_rate
                self.accountant.step(noise_multiplier=self.noise_multiplier,
                                     sample_rate=self.sample_rate)
                idx = torch.tensor(batch, dtype=torch.int64)
                optimizer.zero_grad(set_to_none=True)
                loss = objective(wrapped, idx)
                loss.backward()
                optimizer.step()  # an empty batch still adds the noise, as accounted
                if idx.numel():
                    total += float(loss.detach()) * idx.numel()
                    used += idx.numel()
            return total / max(used, 1), used
        finally:
            wrapped._close()
