"""Trainers built from a model spec (the part of a run's setup that names the model), so the
server, simulated institutions and deployed institutions build the very same model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch import nn

from fedsilo.client.models import build_model
from fedsilo.client.sklearn_trainer import SklearnTrainer
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.core.trainer import Trainer
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError


class ModelCache:
    """One module object per model spec. Institutions simulated in one process take turns on
    it (parameters are copied in and out per task), so K institutions cost one model."""

    def __init__(self) -> None:
        self._models: dict[str, nn.Module] = {}

    def get(self, spec: Mapping[str, Any], num_features: int, num_outputs: int,
            task: str) -> nn.Module:
        key = json.dumps([dict(spec), num_features, num_outputs, task], sort_keys=True)
        if key not in self._models:
            self._models[key] = build_model(spec["kind"], num_features, num_outputs, task,
                                            spec.get("hidden", (32,)), int(spec.get("seed", 0)))
        return self._models[key]


def make_trainer(spec: Mapping[str, Any], data: LocalData,
                 models: ModelCache | None = None, name: str = "") -> Trainer:
    """The trainer a model spec names, on `data`.

    Raises:
        ConfigError: unknown framework or model kind.
    """
    framework = spec.get("framework", "torch")
    if framework == "sklearn":
        return SklearnTrainer(data)
    if framework != "torch":
        raise ConfigError(f"model.framework must be 'torch' or 'sklearn', got '{framework}'")
    model = (models or ModelCache()).get(spec, data.num_features, data.num_outputs, data.task)
    return TorchTrainer(model, data, name=name)
