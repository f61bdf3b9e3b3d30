"""The benchmark task both engines run: scikit-learn's digits split IID across K
institutions (80/20 train/test each), a 64-32-10 MLP, FedAvg, SGD lr 0.1, every institution
training every round. Two workloads (`WORKLOADS`): "federated" (2 local epochs of batch 8,
evaluation on every institution's test split every round: the README's figure) and "central"
(1 epoch of batch 16, the server evaluates the global model on the pooled test splits every
round). Imports only numpy, scikit-learn and torch, so Flower's venv can use it too."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

LR = 0.1
# workload -> (local epochs, batch size, where evaluation runs every round)
WORKLOADS = {"federated": (2, 8, "every institution's test split"),
             "central": (1, 16, "the server, on the pooled test splits")}
EPOCHS, BATCH = WORKLOADS["federated"][:2]  # the default workload


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


def pooled_test(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Every institution's test split, concatenated (the central evaluation set)."""
    return np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def local_sgd(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, batch: int,
              lr: float = LR) -> None:
    """The peers' local training: `epochs` of SGD (cross-entropy) over shuffled batches, in
    place."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        perm = torch.randperm(len(yt))
        for i in range(0, len(yt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """The share of `x` that `model` classifies as `y`."""
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
