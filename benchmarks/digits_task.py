"""The benchmark task both engines run: scikit-learn's digits split IID across K
institutions (80/20 train/test each), a 64-32-10 MLP, FedAvg, 2 local epochs, batch 8,
SGD lr 0.1. Imports only numpy, scikit-learn and torch, so Flower's venv can use it too."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

EPOCHS, BATCH, LR = 2, 8, 0.1


def partitions(k: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """K institutions' (x_train, y_train, x_test, y_test), float32 pixels in [0, 1]."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    out = []
    for part in np.array_split(order, k):
        cut = int(round(len(part) * 0.8))
        out.append((x[part[:cut]], y[part[:cut]], x[part[cut:]], y[part[cut:]]))
    return out


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
