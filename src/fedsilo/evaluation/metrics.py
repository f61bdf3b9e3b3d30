"""Metrics per task, and their example-weighted federated combination."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedsilo.errors import ConfigError

PRIMARY = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse"}
HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "r2": True,
                    "rmse": False, "mae": False, "mse": False, "log_loss": False}
BUILT_IN = ("accuracy", "log_loss", "mse", "rmse", "mae", "r2", "auc")  # built-in names
# what `compute` reports every round, per task
PER_ROUND = {"binary": ("accuracy", "log_loss"), "multiclass": ("accuracy", "log_loss"),
             "regression": ("mse", "rmse", "mae", "r2")}
# the final report's further metrics, beside PRIMARY (scored by `report_extras`)
REPORTED = {"binary": ("auc",), "multiclass": (), "regression": ("r2", "mae")}
MetricFn = Callable[[np.ndarray, np.ndarray], object]  # (y_true, y_pred) -> a number


def compute(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metrics of predictions: probabilities for classification, values for regression."""
    if task == "regression":
        err = y_pred.reshape(-1) - y_true.reshape(-1)
        mse = float(np.mean(err**2))
        var = float(np.var(y_true))
        return {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(err))),
                "r2": 1.0 - mse / var if var > 0 else 0.0}
    eps = 1e-12
    y = y_true.astype(np.int64).reshape(-1)
    if task == "binary":
        p = np.clip(y_pred.reshape(-1).astype(np.float64), eps, 1 - eps)
        out = {"accuracy": float(np.mean((p >= 0.5) == (y == 1))),
               "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))}
        return out
    probs = np.clip(y_pred.astype(np.float64), eps, 1.0)
    return {"accuracy": float(np.mean(np.argmax(y_pred, axis=1) == y)),
            "log_loss": float(-np.mean(np.log(probs[np.arange(len(y)), y])))}


def report_extras(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The final report's further metrics (REPORTED), by scikit-learn: ROC AUC of binary
    probabilities (left out when the test rows hold one class only: AUC is undefined), R² and
    MAE of regression values. Not part of the per-round history."""
    from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

    if task == "binary":
        y = y_true.astype(np.int64).reshape(-1)
        if len(np.unique(y)) < 2:
            return {}
        return {"auc": float(roc_auc_score(y, y_pred.reshape(-1).astype(np.float64)))}
    if task == "regression":
        t, p = y_true.reshape(-1), y_pred.reshape(-1)
        out = {"mae": float(mean_absolute_error(t, p))}
        if len(t) > 1 and float(np.var(t)) > 0:
            out["r2"] = float(r2_score(t, p))
        return out
    return {}


def custom(metrics: Mapping[str, MetricFn], y_true: np.ndarray,
           y_pred: np.ndarray) -> dict[str, float]:
    """Your own metrics ([evaluation] metrics), by name. Each gets `y_true`: the held-out
    targets (classification: int64 class indices; regression: values in the target's original
    units), and `y_pred`: what the trainer's `predict` returns (binary: P(y=1), shape (n,);
    multiclass: class probabilities, shape (n, classes); regression: values in original
    units). Weighted by test examples across institutions, as the built-in metrics are.

    Raises:
        ConfigError: a metric returned something other than a real number, naming it.
    """
    out: dict[str, float] = {}
    for name, fn in metrics.items():
        value = fn(y_true, y_pred)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"metric '{name}' ([evaluation] metrics) must return a number, "
                              f"it returned {type(value).__name__}")
        out[name] = float(value)
    return out


def weighted_mean(per_client: Sequence[Mapping[str, float]],
                  weights: Sequence[float]) -> dict[str, float]:
    """Example-weighted mean of each metric; RMSE is recombined from the weighted MSE so the
    federated RMSE equals the RMSE over all institutions' test rows together."""
    total = float(sum(weights))
    if not per_client or total <= 0:
        return {}
    names = set.intersection(*(set(m) for m in per_client))
    out = {n: float(sum(w * m[n] for m, w in zip(per_client, weights)) / total)
           for n in sorted(names)}
    if "mse" in out:
        out["rmse"] = float(np.sqrt(out["mse"]))
    return out
