"""Synthetic(α, β): the federated datasets of the FedProx paper (Li et al., "Federated
Optimization in Heterogeneous Networks", MLSys 2020, §5.1 and appendix C.1), generated from
the paper's recipe, so no one here chooses the data.

Device k: u_k ~ N(0, α), W_k ~ N(u_k, 1) (60×10), b_k ~ N(u_k, 1); B_k ~ N(0, β),
v_k ~ N(B_k, 1) (60 values); x ~ N(v_k, Σ), Σ diagonal with Σ_jj = j^-1.2;
y = argmax(softmax(W_k x + b_k)). Sizes follow a power law: ⌊lognormal(4, 2)⌋ + 50.
α controls how much local models differ, β how much local data differ. 30 devices, 60
features, 10 classes, as in the paper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsilo.core.rng import generator
from fedsilo.errors import ConfigError

DIMENSION = 60
CLASSES = 10


def fedprox_synthetic(alpha: float, beta: float, devices: int = 30, seed: int = 0,
                      max_rows: int | None = None) -> dict[str, pd.DataFrame]:
    """One table per device: columns x0..x59 and the label y (0..9).

    Args:
        alpha, beta: the heterogeneity parameters (α = β = 0: mild; 1, 1: strong).
        devices: number of devices (institutions).
        seed: the generator seed.
        max_rows: cap a device's rows (the power law has a long tail); None keeps the recipe.
    """
    if alpha < 0 or beta < 0:
        raise ConfigError(f"synthetic: alpha and beta must be >= 0, got {alpha}, {beta}")
    if devices < 1:
        raise ConfigError(f"synthetic: devices must be >= 1, got {devices}")
    rng = generator(seed, "synthetic", str(alpha), str(beta))
    sizes = rng.lognormal(4, 2, devices).astype(int) + 50
    if max_rows is not None:
        sizes = np.minimum(sizes, max_rows)
    u = rng.normal(0, alpha, devices)  # the paper's code takes α, β as standard deviations
    big_b = rng.normal(0, beta, devices)
    std = np.power(np.arange(1, DIMENSION + 1), -1.2 / 2)  # Σ_jj = j^-1.2
    width = len(str(devices - 1))
    tables = {}
    for k in range(devices):
        w = rng.normal(u[k], 1, (DIMENSION, CLASSES))
        b = rng.normal(u[k], 1, CLASSES)
        v = rng.normal(big_b[k], 1, DIMENSION)
        x = v + rng.normal(size=(sizes[k], DIMENSION)) * std
        y = np.argmax(x @ w + b, axis=1)  # softmax is monotone: argmax of the logits
        frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(DIMENSION)])
        frame["y"] = y
        tables[f"device-{k:0{width}d}"] = frame
    return tables
