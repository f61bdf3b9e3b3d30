"""Client sampling: which institutions take part in a round."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedsilo.core.rng import generator
from fedsilo.errors import AggregationError, ConfigError


@dataclass(frozen=True)
class UniformSampler:
    """Samples max(min_clients, ceil(fraction * available)) institutions without replacement.

    The draw is keyed by (seed, round), so it is the same in every run with that seed.
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
        k = min(len(pool), max(self.min_clients, math.ceil(self.fraction * len(pool))))
        if k == len(pool):
            return pool
        picked = generator(seed, round, "sample").choice(len(pool), size=k, replace=False)
        return [pool[i] for i in sorted(picked)]
