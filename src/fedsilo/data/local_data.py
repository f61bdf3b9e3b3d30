"""One institution's prepared data: train and held-out test splits as float32 arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("regression", "binary", "multiclass")


@dataclass(frozen=True)
class LocalData:
    """Arrays after preprocessing. For regression `y` may be standardised: `target_mean` and
    `target_std` map predictions back to the original units for metrics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int = 1
    target_mean: float = 0.0
    target_std: float = 1.0

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.task == "multiclass" else 1
