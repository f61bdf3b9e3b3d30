"""When the server commits a new model: the commit rule of a strategy.

- whole cohort (`buffer` None): a synchronous round; every task of the round is answered (or
  its deadline passes), then the aggregate is applied. FedAvg and every local-training rule.
- K buffered (`buffer` = K): FedBuff (Nguyen et al., AISTATS 2022). Idle institutions train
  on the newest model; every K accepted updates are applied, each scaled by s(τ), τ the
  versions the model moved on since its task. Under secure aggregation the K form a group
  that trains on one version, so s(τ) weighs the group's sum (the server cannot scale one
  masked update).
- every update (`buffer` = 1 and `mixing` = α): FedAsync (Xie et al. 2019),
  θ ← (1 - α s(τ)) θ + α s(τ) θ_i, θ_i the institution's model; the server keeps the last
  `max_staleness` versions to rebuild θ_i from its delta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsilo.algorithms.staleness import Staleness
from fedsilo.errors import ConfigError


@dataclass(frozen=True)
class CommitRule:
    """Args:
        buffer: None (whole cohort) or K accepted updates per commit.
        mixing: FedAsync's α (with buffer 1), else None.
        staleness: s(τ), the weight of an update τ versions old.
        max_staleness: updates older than this are refused (None: any age).
        barrier: buffered runs only: institutions wait for the commit before their next task.
    """

    buffer: int | None = None
    mixing: float | None = None
    staleness: Staleness = field(default_factory=Staleness)
    max_staleness: int | None = None
    barrier: bool = False

    def __post_init__(self) -> None:
        if self.buffer is not None and self.buffer < 1:
            raise ConfigError(f"commit rule: buffer_size must be >= 1, got {self.buffer}")
        if self.mixing is not None and (self.buffer != 1 or not 0.0 < self.mixing <= 1.0):
            raise ConfigError(f"commit rule: mixing (α) must be in (0, 1] with a buffer of 1, "
                              f"got α={self.mixing}, buffer={self.buffer}")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ConfigError(f"commit rule: max_staleness must be >= 0, got "
                              f"{self.max_staleness}")

    @property
    def asynchronous(self) -> bool:
        return self.buffer is not None


WHOLE_COHORT = CommitRule()
