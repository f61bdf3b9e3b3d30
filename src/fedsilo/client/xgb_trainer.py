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
        """Test metrics of the booster's first 1, 2, ..., `rounds` boosting rounds."""
        return [evaluate_on_test(_FirstRounds(self, k), self.data, params)[1]
                for k in range(1, rounds + 1)]

    def predict(self, params: Params, x: np.ndarray, rounds: int | None = None) -> np.ndarray:
        """Predictions of the booster in `params` (of its first `rounds` trees' rounds)."""
        xgboost = require_xgboost()
        booster = load_booster(params)
        span = (0, rounds) if rounds is not None else (0, 0)
        pred = booster.predict(xgboost.DMatrix(x), iteration_range=span)
        return np.asarray(pred, np.float64)


class _FirstRounds:
    """The booster of its first `rounds` boosting rounds (for the per-round curve)."""

    def __init__(self, trainer: XGBoostTrainer, rounds: int) -> None:
        self.trainer, self.rounds = trainer, rounds

    def predict(self, params: Params, x: np.ndarray) -> np.ndarray:
        return self.trainer.predict(params, x, self.rounds)
