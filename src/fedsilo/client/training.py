"""What the built-in trainers share: index batches for one fit, and metrics on the held-out
split (the Trainer contract itself is core/trainer.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from fedsilo.core.params import Params
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.evaluation.metrics import MetricFn, compute, custom, report_extras


def batches(n: int, cfg: TrainConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches for one fit: `epochs` shuffled passes, or `steps` batches cycling passes."""
    size = min(cfg.batch_size, n)
    out: list[np.ndarray] = []
    per_pass = -(-n // size)
    wanted = cfg.steps
    passes = cfg.epochs if cfg.epochs is not None else -(-(cfg.steps or 0) // per_pass)
    for _ in range(passes):
        perm = rng.permutation(n)
        out.extend(perm[i:i + size] for i in range(0, n, size))
    return out[:wanted] if wanted is not None else out


class Predicts(Protocol):
    def predict(self, params: Params, x: np.ndarray) -> np.ndarray: ...


def evaluate_on_test(trainer: Predicts, data: LocalData, params: Params,
                     metrics: Mapping[str, MetricFn] | None = None
                     ) -> tuple[int, dict[str, float]]:
    """Metrics of `params` on the institution's held-out split, in the target's original
    units (a standardised regression target is mapped back before scoring): the built-in
    ones, then your own `metrics` (evaluation/metrics.py, `custom`)."""
    y, pred = _scored(trainer, data, params)
    out = compute(data.task, y, pred)
    if metrics:
        labels = y if data.task == "regression" else np.asarray(y).astype(np.int64).reshape(-1)
        out.update(custom(metrics, labels, pred))
    return len(y), out


def report_on_test(trainer: Predicts, data: LocalData, params: Params) -> dict[str, float]:
    """The final report's further metrics (AUC; R² and MAE) of `params` on the held-out
    split, in the target's original units (evaluation/metrics.py, `report_extras`)."""
    y, pred = _scored(trainer, data, params)
    return report_extras(data.task, y, pred)


def _scored(trainer: Predicts, data: LocalData, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Held-out targets and predictions, a standardised regression target mapped back."""
    pred = trainer.predict(params, data.x_test)
    y = data.y_test
    if data.task == "regression":
        y = y * data.target_std + data.target_mean
        pred = pred * data.target_std + data.target_mean
    return y, pred
