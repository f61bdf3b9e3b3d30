"""Your own loss and metrics, by import path, imported as model factories are
(client/user_model.py: importlib only, never unpickled or exec'd).

- `[client] loss = "my_package.losses:focal"`: `fn(outputs, targets) -> scalar tensor`, used by
  the PyTorch trainer instead of its built-in loss. `outputs` is the model's output (binary
  and regression: flattened to shape (n,); multiclass: logits of shape (n, classes));
  `targets` are float32 (binary: 0/1, regression: the standardised target) or int64 class
  indices (multiclass).
- `[evaluation] metrics = ["my_package.metrics:balanced_accuracy"]`: `fn(y_true, y_pred) ->
  float` on each institution's held-out split, reported under the name after the colon
  (evaluation/metrics.py, `custom`, says what y_true and y_pred hold).

Both travel in the run setup's model spec; an institution imports them only when its site
policy lists them in `factories`. A failing function sends only its error's type.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedsilo.client.user_model import import_factory, run_user_code
from fedsilo.errors import ConfigError
from fedsilo.evaluation.metrics import MetricFn


class UserLoss:
    """The loss `path` names, checked to return a scalar tensor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fn = import_factory(path, "client.loss")

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = run_user_code(self.path, "client.loss", self._fn, outputs, targets)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
            raise ConfigError(f"client.loss '{self.path}' must return a scalar tensor, it "
                              f"returned {type(value).__name__}{shape}")
        return value


def metric_name(path: str) -> str:
    """The name a metric is reported under: what follows the colon of its import path."""
    return path.partition(":")[2]


def load_metrics(paths: Sequence[str]) -> dict[str, MetricFn]:
    """The metric functions `paths` name, by the name each is reported under."""
    return {metric_name(p): _metric(p) for p in paths}


def _metric(path: str) -> MetricFn:
    fn = import_factory(path, "evaluation.metrics")

    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> object:
        return run_user_code(path, "evaluation.metrics", fn, y_true, y_pred)

    return metric
