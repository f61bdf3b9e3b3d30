"""A Trainer for scikit-learn linear models (SGDClassifier / SGDRegressor).

Parameters are `coef` and `intercept` (the estimator's `coef_` and `intercept_`). Local training
is `partial_fit` passes over data we shuffle ourselves, with a constant learning rate.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import SGDClassifier, SGDRegressor

from fedsilo.client.training import batches, evaluate_on_test
from fedsilo.core.params import Params
from fedsilo.core.trainer import Regularizer, TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError


class SklearnTrainer:
    """Logistic (log-loss SGDClassifier) or linear (squared-loss SGDRegressor) regression."""

    def __init__(self, data: LocalData, alpha: float = 1e-4) -> None:
        self.data = data
        self.alpha = alpha
        self._x = np.ascontiguousarray(data.x_train, dtype=np.float64)  # sklearn's SGD is f64
        d, c = data.num_features, data.num_classes
        rows = 1 if data.task == "binary" else c
        self._shapes: dict[str, tuple[int, ...]]
        if data.task == "regression":
            self._shapes = {"coef": (d,), "intercept": (1,)}
        else:
            self._shapes = {"coef": (rows, d), "intercept": (rows,)}

    @property
    def num_examples(self) -> int:
        return len(self.data.y_train)

    def initial_params(self) -> Params:
        return {n: np.zeros(s, dtype=np.float64) for n, s in self._shapes.items()}

    def fit(self, params: Params, cfg: TrainConfig, rng: np.random.Generator,
            reg: Regularizer | None = None) -> tuple[Params, int, dict[str, float]]:
        if reg is not None:
            raise ConfigError("the scikit-learn trainer cannot add a proximal term or control "
                              "variates to its gradients (FedProx, SCAFFOLD, Ditto): use a "
                              "PyTorch model")
        if cfg.optimizer != "sgd":
            raise ConfigError("client: the scikit-learn trainer supports optimizer 'sgd' only")
        est = self._estimator(cfg.lr, params)
        x, y = self._x, self._labels(self.data.y_train)
        steps = batches(self.num_examples, cfg, rng)
        for idx in steps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.partial_fit(x[idx], y[idx])
        new = {"coef": np.asarray(est.coef_, dtype=np.float64).reshape(self._shapes["coef"]),
               "intercept": np.asarray(est.intercept_, np.float64).reshape(
                   self._shapes["intercept"])}
        return new, self.num_examples, {"local_steps": float(len(steps))}

    def gradient(self, params: Params) -> tuple[Params, int, dict[str, float]]:
        raise ConfigError("FedSGD needs gradients; the scikit-learn trainer has none "
                          "(use a PyTorch model)")

    def evaluate(self, params: Params) -> tuple[int, dict[str, float]]:
        """Metrics on this institution's held-out split, in the target's original units."""
        return evaluate_on_test(self, self.data, params)

    def predict(self, params: Params, x: np.ndarray) -> np.ndarray:
        z = x.astype(np.float64) @ np.atleast_2d(params["coef"]).T + params["intercept"]
        if self.data.task == "regression":
            return z.reshape(-1)
        if self.data.task == "binary":
            return 1.0 / (1.0 + np.exp(-z.reshape(-1)))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def _labels(self, y: np.ndarray) -> np.ndarray:
        return y if self.data.task == "regression" else y.astype(np.int64)

    def _estimator(self, lr: float, params: Params) -> SGDClassifier | SGDRegressor:
        common = {"learning_rate": "constant", "eta0": lr, "alpha": self.alpha, "shuffle": False}
        if self.data.task == "regression":
            est: SGDClassifier | SGDRegressor = SGDRegressor(**common)
            est.partial_fit(self._x[:1], self.data.y_train[:1])
        else:
            est = SGDClassifier(loss="log_loss", **common)
            classes = np.arange(max(self.data.num_classes, 2))
            est.partial_fit(self._x[:1], self._labels(self.data.y_train[:1]),
                            classes=classes)
        est.coef_ = np.array(params["coef"], dtype=np.float64).reshape(est.coef_.shape)
        est.intercept_ = np.array(params["intercept"], dtype=np.float64).reshape(
            est.intercept_.shape)
        return est
