"""The declared shape of an institution's table: features, target, task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.data.local_data import TASKS
from fedsilo.errors import ConfigError, DataError


@dataclass(frozen=True)
class Schema:
    """Which columns are features (numeric or categorical), which is the target, and the task.

    `positive_above`: for a binary task from a graded column, y = 1 where target > this value.
    `scale_target`: standardise a regression target (with federated statistics) for training.
    `shape`: for array data (data/arrays.py), one example's input shape; its features are the
    channels (axis 0 of `shape`), named `channel_<i>`; None for a table.
    """

    target: str
    task: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    positive_above: float | None = None
    scale_target: bool = True
    drop_missing_target: bool = field(default=True)
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"data.task must be one of {TASKS}, got '{self.task}'")
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ConfigError(f"data: columns {sorted(both)} are both numeric and categorical")
        if self.target in self.features:
            raise ConfigError(f"data: target '{self.target}' is also listed as a feature")
        if not self.features:
            raise ConfigError("data: no feature columns declared")

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def values_per_row(self) -> int:
        """Values of one feature in one example: 1 for a table, the pixels of one channel
        for an image."""
        return int(np.prod(self.shape[1:])) if self.shape else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schema:
        shape = d.get("shape")
        return cls(**{**d, "numeric": tuple(d["numeric"]),
                      "categorical": tuple(d["categorical"]),
                      "shape": tuple(int(n) for n in shape) if shape is not None else None})

    def check(self, frame: pd.DataFrame, where: str) -> None:
        """Raise DataError naming every declared column that `frame` lacks."""
        missing = [c for c in (*self.features, self.target) if c not in frame.columns]
        if missing:  # the present names are not echoed: a header-less file's are data
            raise DataError(f"{where}: missing column(s) {names(missing)} of the "
                            f"{len(frame.columns)} it has (a file without a header line "
                            f"needs data.columns)")


def names(items: list[str], shown: int = 10) -> str:
    """A list for a message: the first `shown` items, then how many more."""
    head = repr(items[:shown])
    return head if len(items) <= shown else f"{head[:-1]}, ... {len(items) - shown} more]"
