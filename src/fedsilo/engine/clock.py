"""The clocks a run is driven under (engine/drivers.py). The virtual clock of simulations:
how long an institution's task takes in simulated seconds, so runs are fast, deterministic
and comparable in simulated wall time.

duration = examples processed × seconds_per_example / speed + network delay, where speed is
the institution's relative compute speed (1 = the reference; 0.2 = five times slower) and
the delay is constant or drawn (exponential or log-normal with the given mean) from a
generator keyed by (seed, institution, task count): the same seed, the same timeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsilo.core.rng import generator
from fedsilo.errors import ConfigError

DELAYS = ("constant", "exponential", "lognormal")


@dataclass(frozen=True)
class VirtualClock:
    """Args:
        seconds_per_example: compute time per example processed at speed 1.
        speeds: institution -> relative speed (default 1).
        delay: 'constant', 'exponential' or 'lognormal' (σ = 0.5) network delay.
        delay_mean: mean delay in seconds, for every institution ...
        delays: ... or per institution.
        seed: the run seed.
    """

    seconds_per_example: float = 1e-3
    speeds: Mapping[str, float] = field(default_factory=dict)
    delay: str = "constant"
    delay_mean: float = 0.0
    delays: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay not in DELAYS:
            raise ConfigError(f"clock: delay must be one of {DELAYS}, got '{self.delay}'")
        if self.seconds_per_example < 0:
            raise ConfigError(f"clock: seconds_per_example must be >= 0, got "
                              f"{self.seconds_per_example}")
        bad = {k: v for k, v in self.speeds.items() if not v > 0}
        if bad:
            raise ConfigError(f"clock: speeds must be > 0, got {bad}")
        if self.delay_mean < 0 or any(v < 0 for v in self.delays.values()):
            raise ConfigError("clock: delays must be >= 0")

    def duration(self, client: str, examples: int, count: int) -> float:
        """Simulated seconds for `client`'s `count`-th task processing `examples` examples."""
        compute = examples * self.seconds_per_example / self.speeds.get(client, 1.0)
        return compute + self._delay(client, count)

    def _delay(self, client: str, count: int) -> float:
        mean = self.delays.get(client, self.delay_mean)
        if mean == 0 or self.delay == "constant":
            return mean
        rng = generator(self.seed, client, count, "delay")
        if self.delay == "exponential":
            return float(rng.exponential(mean))
        sigma = 0.5  # log-normal with the given mean
        return float(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma))


@dataclass(frozen=True)
class WallClock:
    """Real time: tasks run where the institutions are, replies count as they arrive."""


Clock = VirtualClock | WallClock | None  # None: simulated, every task takes no time


def examples_processed(config: Mapping[str, Any], num_examples: int) -> int:
    """How many examples a fit task went through: epochs × rows, or steps × batch size."""
    if config.get("steps"):
        return int(config["steps"]) * int(config.get("batch_size", 32))
    return int(config.get("epochs") or 1) * num_examples
