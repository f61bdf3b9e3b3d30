"""The vertical protocols by [model] kind, and one call that trains one in process and predicts
(the simulation's vertical run and both references; the label holder's own reference in a
deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError

PROTOCOLS = {"logistic_regression": "hetero_lr", "linear_regression": "hetero_lr",
             "mlp": "split_learning", "xgboost": "trees"}


@dataclass(frozen=True)
class Recipe:
    """How to train: the model kind, the task, and [vertical]'s settings; `seed` is the model
    seed (vertical.local.model_seed of the run seed)."""

    kind: str
    task: str
    epochs: int
    lr: float
    batch_size: int
    noise: float
    hidden: int
    seed: int

    @property
    def protocol(self) -> str:
        return PROTOCOLS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Recipe:
        try:
            recipe = cls(str(raw["kind"]), str(raw["task"]), int(raw["epochs"]),
                         float(raw["lr"]), int(raw["batch_size"]), float(raw["noise"]),
                         int(raw["hidden"]), int(raw["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"vertical recipe is malformed: {e!r}") from None
        if recipe.kind not in PROTOCOLS:
            raise ConfigError(f"vertical recipe names an unknown model kind '{recipe.kind}'")
        return recipe


def fit_predict(recipe: Recipe, fit: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray],
                y: np.ndarray, holder: str, wire: list[Any] | None = None) -> np.ndarray:
    """Train Hetero-LR or split learning on `fit` (blocks in the top's input order) in process;
    predict the `held` rows (P(y = 1), class probabilities or values)."""
    if recipe.protocol == "hetero_lr":
        from fedsilo.vertical.hetero_lr import fit_hetero_lr, predict_hetero

        weights = fit_hetero_lr(fit, y, holder, recipe.task, recipe.epochs, recipe.lr,
                                recipe.batch_size, recipe.seed, wire=wire)
        return np.asarray(predict_hetero(held, weights, recipe.task), np.float64)
    if recipe.protocol != "split_learning":
        raise ConfigError(f"fit_predict trains Hetero-LR or split learning, not {recipe.kind}")
    from fedsilo.vertical.splitnn import fit_splitnn, new_bottom, new_top, predict_splitnn

    outputs = 1 if recipe.task != "multiclass" else int(y.max()) + 1
    bottoms = {n: new_bottom(x.shape[1], recipe.hidden, recipe.seed, n) for n, x in fit.items()}
    top = new_top(recipe.hidden * len(fit), outputs, recipe.seed)
    bottoms, top = fit_splitnn(fit, y, holder, bottoms, top, recipe.task, recipe.epochs,
                               recipe.lr, recipe.batch_size, recipe.seed,
                               noise_std=recipe.noise, wire=wire)
    return np.asarray(predict_splitnn(held, bottoms, top, recipe.task), np.float64)
