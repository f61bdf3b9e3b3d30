"""Shared helpers: small real datasets and in-process federations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsilo.algorithms.base import Strategy
from fedsilo.client.client import Client
from fedsilo.client.local_data import LocalData
from fedsilo.client.models import build_model
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.transport.inprocess import InProcessTransport

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

torch.set_num_threads(1)


def digits_data(n_institutions: int, seed: int = 0) -> list[LocalData]:
    """scikit-learn's digits (shipped with the package), standardised, split IID."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    out = []
    for part in np.array_split(order, n_institutions):
        cut = int(len(part) * 0.8)
        tr, te = part[:cut], part[cut:]
        out.append(LocalData(x[tr], y[tr].astype(np.float32), x[te], y[te].astype(np.float32),
                             "multiclass", 10))
    return out


def federation(datas: list[LocalData], strategy: Strategy, kind: str = "logistic_regression",
               seed: int = 0) -> tuple[InProcessTransport, dict[str, Client]]:
    d = datas[0]
    model = build_model(kind, d.num_features, d.num_outputs, d.task, (16,), seed=seed)
    clients = {f"c{i}": Client(f"c{i}", TorchTrainer(model, data), strategy.aggregator)
               for i, data in enumerate(datas)}
    return InProcessTransport(clients), clients


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES


def load_example(relative: str):  # type: ignore[no-untyped-def]
    """Import an example script (examples/<relative>) as a module, to test its recipe."""
    import importlib.util

    path = EXAMPLES / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
