"""Built-in PyTorch models: linear regression, logistic regression, a small MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedsilo.errors import ConfigError

MODELS = ("linear_regression", "logistic_regression", "mlp")


def build_model(kind: str, num_features: int, num_outputs: int, task: str,
                hidden: Sequence[int] = (32,), seed: int = 0) -> nn.Module:
    """A freshly initialised model, seeded so every run starts from the same weights.

    Raises:
        ConfigError: unknown kind, or a kind that does not fit the task.
    """
    if kind not in MODELS:
        raise ConfigError(f"model: kind must be one of {MODELS}, got '{kind}'")
    if kind == "linear_regression" and task != "regression":
        raise ConfigError(f"model: linear_regression needs task 'regression', got '{task}'")
    if kind == "logistic_regression" and task == "regression":
        raise ConfigError("model: logistic_regression needs a binary or multiclass task")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if kind == "mlp":
            sizes = [num_features, *hidden]
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            return nn.Sequential(*layers, nn.Linear(sizes[-1], num_outputs))
        return nn.Sequential(nn.Linear(num_features, num_outputs))
    finally:
        torch.random.set_rng_state(generator_state)
