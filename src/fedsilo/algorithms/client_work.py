"""Client work: what an institution computes from the global model and its data.

Every work returns a pseudo-gradient in the descent direction, so that one server rule,
θ ← θ + optimizer(g), covers FedAvg, FedSGD and the adaptive optimizers:

- `local_training`: g_i = θ - θ_i after local epochs/steps (McMahan et al. 2017);
- `gradient`: g_i = ∇L_i(θ), one full-batch gradient (FedSGD).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedsilo.client.trainer import TrainConfig, Trainer
from fedsilo.core.params import Params
from fedsilo.errors import ConfigError

WorkResult = tuple[Params, int, dict[str, float]]
ClientWork = Callable[[Trainer, Params, dict[str, Any], np.random.Generator], WorkResult]


def local_training(trainer: Trainer, params: Params, config: dict[str, Any],
                   rng: np.random.Generator) -> WorkResult:
    """Train locally, return θ - θ_local (the model delta, descent-signed)."""
    new, n, metrics = trainer.fit(params, TrainConfig.from_mapping(config), rng)
    delta = {}
    for k, p in params.items():
        out = new[k]
        if out is p or out.dtype != p.dtype or not out.flags.writeable:
            delta[k] = (p - out).astype(p.dtype, copy=False)
        else:  # the trainer handed us fresh arrays: reuse them (no 2nd model in memory)
            delta[k] = np.subtract(p, out, out=out)
    return delta, n, metrics


def gradient(trainer: Trainer, params: Params, config: dict[str, Any],
             rng: np.random.Generator) -> WorkResult:
    """Return the full-batch gradient of the local loss at θ."""
    return trainer.gradient(params)


CLIENT_WORKS: dict[str, ClientWork] = {"local_training": local_training, "gradient": gradient}


def get_client_work(name: str) -> ClientWork:
    try:
        return CLIENT_WORKS[name]
    except KeyError:
        known = sorted(CLIENT_WORKS)
        raise ConfigError(f"client work '{name}' is unknown; known: {known}") from None
