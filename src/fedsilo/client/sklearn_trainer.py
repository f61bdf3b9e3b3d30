"""A Trainer for scikit-learn linear models: the built-in ones (log-loss SGDClassifier,
squared-loss SGDRegressor) or your own estimator (`[model] framework = "sklearn"` with a
`factory`, client/user_model.py): any estimator with `partial_fit` that has `coef_` and
`intercept_` once fitted (SGDClassifier, SGDRegressor, Perceptron, PassiveAggressive...).

Parameters are `coef` and `intercept` (the estimator's `coef_` and `intercept_`). Every fit
starts from a fresh copy of the estimator (the built-in one with a constant learning rate of
[client] lr; yours with its own hyper-parameters, `sklearn.base.clone`): one `partial_fit` on
one row sets up its internal state, the global parameters replace `coef_` and `intercept_`,
then `partial_fit` runs over batches we shuffle ourselves. Predictions are those of the linear
model: sigmoid (binary) or softmax (multiclass) of coef·x + intercept, whatever loss trained
it, or the value (regression).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.linear_model import SGDClassifier, SGDRegressor

from fedsilo.client.training import batches, evaluate_on_test
from fedsilo.core.params import Params
from fedsilo.core.trainer import Regularizer, TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError
from fedsilo.evaluation.metrics import MetricFn

log = logging.getLogger(__name__)


class SklearnTrainer:
    """Trains a scikit-learn linear model on `data`.

    Args:
        data: this institution's arrays.
        alpha: the built-in estimators' L2 penalty.
        estimator: your own (unfitted) estimator, cloned for every fit; None: the built-in
            logistic (classification) or linear (regression) regression.
        metrics: your own metrics by name ([evaluation] metrics).

    Raises:
        ConfigError: an estimator of the wrong kind for the task (a regressor for
            classification or the reverse), one whose partial_fit fails, or one that has no
            coef_ and intercept_ after partial_fit.
    """

    def __init__(self, data: LocalData, alpha: float = 1e-4, estimator: Any = None,
                 metrics: Mapping[str, MetricFn] | None = None) -> None:
        self.data = data
        self.alpha = alpha
        self.estimator = estimator
        self.metrics = dict(metrics or {})
        self._x = np.ascontiguousarray(data.x_train, dtype=np.float64)  # sklearn's SGD is f64
        if estimator is not None:
            _check_kind(estimator, data.task)
        zero_row = np.zeros((1, data.num_features), dtype=np.float64)
        probe = self._primed(self._template(0.01), zero_row, self._labels(np.zeros(1)))
        self._shapes = {"coef": tuple(np.shape(probe.coef_)),
                        "intercept": tuple(np.shape(probe.intercept_))}

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
        x, y = self._x, self._labels(self.data.y_train)
        est = self._primed(self._template(cfg.lr), x[:1], y[:1])
        est.coef_ = np.array(params["coef"], dtype=np.float64).reshape(est.coef_.shape)
        est.intercept_ = np.array(params["intercept"], dtype=np.float64).reshape(
            est.intercept_.shape)
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
        return evaluate_on_test(self, self.data, params, self.metrics)

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

    def _template(self, lr: float) -> Any:
        """A fresh, unfitted estimator: a clone of yours, or the built-in one at `lr`."""
        if self.estimator is not None:
            return clone(self.estimator)
        common = {"learning_rate": "constant", "eta0": lr, "alpha": self.alpha, "shuffle": False}
        if self.data.task == "regression":
            return SGDRegressor(**common)
        return SGDClassifier(loss="log_loss", **common)

    def _primed(self, est: Any, x: np.ndarray, y: np.ndarray) -> Any:
        """`est` after one partial_fit on (x, y), every class declared: it has coef_ and
        intercept_ of their final shapes (which the caller overwrites)."""
        kwargs = ({} if self.data.task == "regression"
                  else {"classes": np.arange(max(self.data.num_classes, 2))})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.partial_fit(x, y, **kwargs)
        except Exception as e:  # your estimator's settings: the type only (as for factories)
            log.warning("%s.partial_fit failed: %s: %s", type(est).__name__, type(e).__name__, e)
            raise ConfigError(f"{type(est).__name__}.partial_fit failed with "
                              f"{type(e).__name__} (details in this institution's log)") from None
        if not hasattr(est, "coef_") or not hasattr(est, "intercept_"):
            raise ConfigError(f"{type(est).__name__} has no coef_ and intercept_ after "
                              f"partial_fit: framework 'sklearn' federates linear models "
                              f"(SGDClassifier, SGDRegressor, Perceptron, ...)")
        return est


def _check_kind(estimator: Any, task: str) -> None:
    """Refuse a regressor for a classification task, or a classifier for regression."""
    name = type(estimator).__name__
    if task == "regression" and not is_regressor(estimator):
        raise ConfigError(f"a regression task needs a scikit-learn regressor (e.g. "
                          f"SGDRegressor), the model factory returned {name}")
    if task != "regression" and not is_classifier(estimator):
        raise ConfigError(f"a {task} task needs a scikit-learn classifier (e.g. "
                          f"SGDClassifier), the model factory returned {name}")
