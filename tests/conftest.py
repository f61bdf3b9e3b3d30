"""Shared helpers: small real datasets and in-process federations."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from fedsilo.algorithms.base import Strategy
from fedsilo.client.client import Client
from fedsilo.client.models import build_model
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.data.local_data import LocalData
from fedsilo.transport.inprocess import InProcessTransport

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example_module(folder: Path, name: str) -> ModuleType:
    """An example's own script loaded from its file (e.g. digits_images/prepare_data.py)."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

torch.set_num_threads(1)
BURN = "while True:\n    pass\n"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stress", action="store_true",
                     help="keep every core busy with CPU burners while the tests run (tests "
                          "must wait on events, never on how fast the machine is)")


@pytest.fixture(scope="session", autouse=True)
def cpu_burners(request: pytest.FixtureRequest) -> Iterator[int]:
    """With --stress: one busy-looping process per core for the whole session."""
    count = (os.cpu_count() or 1) if request.config.getoption("--stress") else 0
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count)]
    try:
        yield count
    finally:
        for b in burners:
            b.kill()
            b.wait()


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
