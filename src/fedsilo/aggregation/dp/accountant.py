"""Privacy accounting with Google's dp-accounting (RDP accountant), never home-made formulas.

Each round releases a Gaussian-noised sum of clipped institution updates: a Gaussian mechanism
with noise multiplier z (noise std / clip norm). ε after T rounds at δ is the RDP accountant's
value for T such releases.

Central and distributed DP are accounted with q = 1 (`Accountant.public_cohort`): the server
draws each round's cohort from the public run seed and the run store records who took part, so
no institution's participation is secret and sampling amplifies nothing against the server.
A rate q < 1 (Poisson subsampling) is only for a cohort the observer cannot know.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import dp_accounting as dpa
from dp_accounting import rdp

from fedsilo.errors import ConfigError

logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's convergence chatter


@dataclass(frozen=True)
class Accountant:
    noise_multiplier: float
    sampling_rate: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigError(f"privacy: noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sampling_rate <= 1:
            raise ConfigError(f"privacy: sampling rate must be in (0, 1], got {self.sampling_rate}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"privacy: delta must be in (0, 1), got {self.delta}")

    @classmethod
    def public_cohort(cls, noise_multiplier: float, delta: float) -> Accountant:
        """The accountant of central and distributed DP: every round is a full Gaussian release
        for every institution (q = 1), as the cohort is known to the server."""
        return cls(noise_multiplier, 1.0, delta)

    def event(self, rounds: int) -> dpa.DpEvent:
        one: dpa.DpEvent = dpa.GaussianDpEvent(self.noise_multiplier)
        if self.sampling_rate < 1:
            one = dpa.PoissonSampledDpEvent(self.sampling_rate, one)
        return dpa.SelfComposedDpEvent(one, rounds)

    def epsilon(self, rounds: int) -> float:
        """ε at `delta` after `rounds` noisy releases."""
        return _epsilon(self, rounds)

    def max_rounds(self, target_epsilon: float, limit: int) -> int:
        """The most rounds (≤ limit) whose ε stays within `target_epsilon`."""
        lo, hi = 0, limit
        while lo < hi:  # ε grows with rounds: binary search
            mid = (lo + hi + 1) // 2
            if self.epsilon(mid) <= target_epsilon:
                lo = mid
            else:
                hi = mid - 1
        return lo


@lru_cache(maxsize=4096)
def _epsilon(acc: Accountant, rounds: int) -> float:
    if rounds <= 0:
        return 0.0
    accountant = rdp.RdpAccountant()
    accountant.compose(acc.event(rounds))
    return float(accountant.get_epsilon(acc.delta))
