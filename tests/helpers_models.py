"""Model factories the tests name by import path ("tests.helpers_models:mlp")."""

from __future__ import annotations

from torch import nn


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
