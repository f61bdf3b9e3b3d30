"""Client sampling: which institutions take part in a round."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedsilo.core.rng import generator
from fedsilo.errors import AggregationError, ConfigError


def cohort_size(available: int, fraction: float, min_clients: int) -> int:
    """How many of `available` institutions a round samples: max(min_clients,
    ceil(fraction * available)), at most all of them."""
    return min(available, max(min_clients, math.ceil(fraction * available)))


@dataclass(frozen=True)
class UniformSampler:
    """Samples max(min_clients, ceil(fraction * available)) institutions without replacement.

    The draw is keyed by (seed, round), so it is the same in every run with that seed: the
    cohort is public (the server draws it and the run store records it), so differential
    privacy takes no amplification from it (accounted with q = 1, aggregation/dp/accountant).
    """

    fraction: float = 1.0
    min_clients: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"sampling: fraction must be in (0, 1], got {self.fraction}")
        if self.min_clients < 1:
            raise ConfigError(f"sampling: min_clients must be >= 1, got {self.min_clients}")

    def sample(self, available: Sequence[str], round: int, seed: int) -> list[str]:
        """The cohort for `round`, in a fixed (sorted) order.

        Raises:
            AggregationError: fewer institutions available than `min_clients`.
        """
        pool = sorted(available)
        if len(pool) < self.min_clients:
            raise AggregationError(f"sampling: {len(pool)} institutions available, "
                                   f"min_clients is {self.min_clients}")
        k = cohort_size(len(pool), self.fraction, self.min_clients)
        if k == len(pool):
            return pool
        picked = generator(seed, round, "sample").choice(len(pool), size=k, replace=False)
        return [pool[i] for i in sorted(picked)]


@dataclass(frozen=True)
class Stragglers:
    """Systems heterogeneity as in FedProx's experiments (Li et al., MLSys 2020, §5.2): in each
    round a `fraction` of the cohort can only finish part of the local work, a number of
    epochs (or steps) drawn uniformly from 1..E. `policy` says what the server does with them:
    'drop' leaves them out of the round (FedAvg at a deadline), 'partial' folds in their
    partial work (FedProx).
    """

    fraction: float
    policy: str = "partial"

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"stragglers: fraction must be in [0, 1], got {self.fraction}")
        if self.policy not in ("drop", "partial"):
            raise ConfigError(f"stragglers: policy must be 'drop' or 'partial', "
                              f"got '{self.policy}'")

    def apply(self, configs: dict[str, dict], round: int, seed: int) -> dict[str, dict]:
        """The cohort's task configs with stragglers' work cut (or stragglers removed)."""
        cohort = sorted(configs)
        rng = generator(seed, round, "stragglers")
        count = int(round_half_up(self.fraction * len(cohort)))
        slow = {cohort[i] for i in rng.choice(len(cohort), size=count, replace=False)}
        out = {}
        for cid in cohort:
            if cid not in slow:
                out[cid] = configs[cid]
            elif self.policy == "partial":
                out[cid] = _partial(configs[cid], rng)
        return out


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _partial(config: dict, rng: np.random.Generator) -> dict:
    key = "steps" if config.get("steps") else "epochs"
    full = int(config.get(key) or 1)
    return {**config, key: int(rng.integers(1, full + 1))}
