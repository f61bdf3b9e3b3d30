"""Trainers built from a model spec (the part of a run's setup that names the model, and your
own loss and metrics when the run names them), so the server, simulated institutions and
deployed institutions build the very same model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch import nn

from fedsilo.client.models import build_model
from fedsilo.client.sklearn_trainer import SklearnTrainer
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.client.user_functions import UserLoss, load_metrics
from fedsilo.client.user_model import (
    build_user_estimator,
    build_user_model,
    check_architecture,
    module_architecture,
    params_architecture,
)
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
            if spec.get("factory") is not None:  # your own model, by import path
                model = build_user_model(str(spec["factory"]), spec.get("args") or {},
                                         num_features, num_outputs, int(spec.get("seed", 0)))
            else:
                model = build_model(spec.get("kind", ""), num_features, num_outputs, task,
                                    spec.get("hidden", (32,)), int(spec.get("seed", 0)))
            # before it is cached: a mismatch is never used
            check_architecture(module_architecture(model), spec)
            self._models[key] = model
        return self._models[key]


def make_trainer(spec: Mapping[str, Any], data: LocalData,
                 models: ModelCache | None = None, name: str = "") -> Trainer:
    """The trainer a model spec names, on `data`.

    Raises:
        ConfigError: unknown framework or model kind; a model factory, loss or metric that
            cannot be imported; a factory that fails or returns no nn.Module (torch) or no
            estimator with partial_fit (sklearn); a model whose parameter names or shapes
            differ from the architecture the server recorded in `spec`.
    """
    framework = spec.get("framework", "torch")
    if spec.get("kind") == "xgboost":  # trained by XGBoost's collective; scored here
        from fedsilo.client.xgb_trainer import XGBoostTrainer

        return XGBoostTrainer(data, spec)
    if spec.get("factory") is None and data.x_train.ndim > 2:
        raise ConfigError(f"the built-in models take one row of features per example; these "
                          f"inputs are shaped {list(data.x_train.shape[1:])}: name your own "
                          f"model with [model] factory")
    metrics = load_metrics([str(p) for p in spec.get("metrics") or []])
    if framework == "sklearn":
        if spec.get("loss") is not None:
            raise ConfigError("client.loss applies to PyTorch models; a scikit-learn "
                              "estimator trains with its own loss")
        estimator = None
        if spec.get("factory") is not None:  # your own estimator, by import path
            estimator = build_user_estimator(str(spec["factory"]), spec.get("args") or {},
                                             data.num_features, data.num_outputs,
                                             int(spec.get("seed", 0)))
        trainer = SklearnTrainer(data, estimator=estimator, metrics=metrics)
        check_architecture(params_architecture(trainer.initial_params()), spec)
        return trainer
    if framework != "torch":
        raise ConfigError(f"model.framework must be 'torch' or 'sklearn', got '{framework}'")
    model = (models or ModelCache()).get(spec, data.num_features, data.num_outputs, data.task)
    loss = UserLoss(str(spec["loss"])) if spec.get("loss") is not None else None
    return TorchTrainer(model, data, loss=loss, name=name,
                        batchnorm=str(spec.get("batchnorm", "average")), metrics=metrics)
