"""The Trainer of a federated XGBoost model: it scores the booster (evaluate, predict) on one
institution's data. The booster is trained only by XGBoost's federated engine (trees/xgb.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.client.training import evaluate_on_test
from fedsilo.core.params import Params
from fedsilo.core.trainer import Regularizer, TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError
from fedsilo.trees.xgb import BOOSTER, load_booster, require_xgboost


class XGBoostTrainer:
    """Scores a federated booster on one institution's data (the Trainer protocol's
    evaluate/predict). Training happens only through the collective (BoostJob)."""

    def __init__(self, data: LocalData, spec: Mapping[str, Any]) -> None:
        self.data = data
        self.spec = dict(spec)

    @property
    def num_examples(self) -> int:
        return len(self.data.y_train)

    def initial_params(self) -> Params:
        return {BOOSTER: np.zeros(0, np.uint8)}

    def fit(self, params: Params, cfg: TrainConfig, rng: np.random.Generator,
            reg: Regularizer | None = None) -> tuple[Params, int, dict[str, float]]:
        raise ConfigError("trees are trained by XGBoost's federated engine, not fit tasks")

    def gradient(self, params: Params) -> tuple[Params, int, dict[str, float]]:
        raise ConfigError("trees are trained by XGBoost's federated engine, not gradients")

    def evaluate(self, params: Params) -> tuple[int, dict[str, float]]:
        return evaluate_on_test(self, self.data, params)

    def curve(self, params: Params, rounds: int) -> list[dict[str, float]]:
        """Test metrics of the booster's first 1, 2, ..., `rounds` boosting rounds (the model
        parsed and the test rows wrapped once)."""
        xgboost = require_xgboost()
        booster, test = load_booster(params), xgboost.DMatrix(self.data.x_test)
        return [evaluate_on_test(_FirstRounds(booster, test, k), self.data, params)[1]
                for k in range(1, rounds + 1)]

    def predict(self, params: Params, x: np.ndarray) -> np.ndarray:
        """Predictions of the booster in `params`."""
        xgboost = require_xgboost()
        return np.asarray(load_booster(params).predict(xgboost.DMatrix(x)), np.float64)


class _FirstRounds:
    """A parsed booster's predictions on the test rows after its first `rounds` rounds."""

    def __init__(self, booster: Any, test: Any, rounds: int) -> None:
        self.booster, self.test, self.rounds = booster, test, rounds

    def predict(self, params: Params, x: np.ndarray) -> np.ndarray:
        pred = self.booster.predict(self.test, iteration_range=(0, self.rounds))
        return np.asarray(pred, np.float64)
