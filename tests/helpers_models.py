"""Model factories, losses and metrics the tests name by import path
("tests.helpers_models:mlp")."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def mlp(num_features: int, num_outputs: int, hidden: list[int] | None = None) -> nn.Module:
    """The built-in `mlp` (fedsilo.client.models.build_model), layer for layer."""
    return _mlp(num_features, num_outputs, hidden)


def _mlp(num_features: int, num_outputs: int, hidden: list[int] | None) -> nn.Module:
    sizes = [num_features, *(hidden if hidden is not None else [32])]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], num_outputs))


def wider(num_features: int, num_outputs: int, hidden: list[int] | None = None) -> nn.Module:
    """What an institution with other code installed under the same name might build."""
    return _mlp(num_features, num_outputs, [2 * h for h in (hidden or [32])])


def not_a_module(num_features: int, num_outputs: int) -> object:
    return {"features": num_features}


NOT_CALLABLE = 3


def leaky(num_features: int, num_outputs: int) -> nn.Module:
    """A factory that fails quoting a value it read (as user code may)."""
    raise ValueError("row of patient 4711 has age 93")


def bn_mlp(num_features: int, num_outputs: int, hidden: int = 8) -> nn.Module:
    """Linear - BatchNorm1d - ReLU - Linear (for the BatchNorm rule)."""
    return nn.Sequential(nn.Linear(num_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, num_outputs))


# scikit-learn estimators (framework = "sklearn") ------------------------------------------
def sgd_classifier(num_features: int, num_outputs: int, lr: float = 0.01,
                   shuffle: bool = False, random_state: int | None = None) -> object:
    """The built-in logistic regression's estimator (client/sklearn_trainer.py)."""
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", learning_rate="constant", eta0=lr, alpha=1e-4,
                         shuffle=shuffle, random_state=random_state)


def perceptron(num_features: int, num_outputs: int) -> object:
    from sklearn.linear_model import Perceptron

    return Perceptron(eta0=0.1)


def sgd_regressor(num_features: int, num_outputs: int) -> object:
    from sklearn.linear_model import SGDRegressor

    return SGDRegressor()


def mlp_classifier(num_features: int, num_outputs: int) -> object:
    """Has partial_fit but no coef_ / intercept_ (not a linear model)."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(4,))


def no_partial_fit(num_features: int, num_outputs: int) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


# losses ([client] loss) and metrics ([evaluation] metrics) --------------------------------
def bce_by_hand(outputs: Tensor, targets: Tensor) -> Tensor:
    """BCEWithLogitsLoss (the built-in binary loss), written out."""
    return torch.mean(torch.clamp(outputs, min=0) - outputs * targets
                      + torch.log1p(torch.exp(-torch.abs(outputs))))


def bce_twice(outputs: Tensor, targets: Tensor) -> Tensor:
    return 2.0 * nn.functional.binary_cross_entropy_with_logits(outputs, targets)


def per_row_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Forgets to reduce: not a scalar."""
    return nn.functional.binary_cross_entropy_with_logits(outputs, targets, reduction="none")


def leaky_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    raise ValueError("row of patient 4711 has age 93")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """sklearn's balanced accuracy of the predicted class (binary: P(y=1) >= 0.5)."""
    from sklearn.metrics import balanced_accuracy_score

    labels = (y_pred >= 0.5).astype(np.int64) if y_pred.ndim == 1 else y_pred.argmax(axis=1)
    return float(balanced_accuracy_score(y_true, labels))


def not_a_number(y_true: np.ndarray, y_pred: np.ndarray) -> object:
    return [0.5]
