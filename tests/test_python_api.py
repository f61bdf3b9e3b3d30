"""The Python API: institutions as DataFrames, any torch module with its own loss."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.config.schema import parse_config
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation

RAW = {"run": {"name": "api", "seed": 1, "rounds": 3},
       "data": {"task": "regression", "target": "y"},
       "model": {"kind": "linear_regression"},
       "client": {"epochs": 2, "batch_size": 16, "lr": 0.05}}


def frames():
    rng = np.random.default_rng(0)
    out = {}
    for name, shift in (("north", 0.0), ("south", 1.0), ("east", -1.0)):
        x = rng.normal(shift, 1.0, size=(120, 3))
        out[name] = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2],
                                  "y": x @ [2.0, -1.0, 0.5] + 3 + 0.1 * rng.normal(size=120)})
    return out


def test_dataframes_as_institutions():
    cfg = parse_config(RAW, Path("."))
    result = run_simulation(cfg, write=False, tables=frames())
    assert [r.institution for r in result.comparison.rows] == ["east", "north", "south"]
    assert result.final["r2"] > 0.9
    assert result.feature_names == ["a", "b", "c"]


def test_no_data_source_is_named():
    with pytest.raises(ConfigError, match="no source"):
        run_simulation(parse_config(RAW, Path(".")), write=False)


def test_custom_module_loss_and_optimizer():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.float32)
    data = LocalData(x, y, x, y, "binary", 2)

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def forward(self, z):
            return 3.0 * self.lin(z)

    used = []

    def rmsprop(params, cfg: TrainConfig):
        used.append(cfg.lr)
        return torch.optim.RMSprop(params, lr=cfg.lr)

    trainer = TorchTrainer(Scaled(), data, loss=torch.nn.BCEWithLogitsLoss(), optimizer=rmsprop)
    strategy = fedavg({"epochs": 1, "lr": 0.02})
    params, n, metrics = trainer.fit(trainer.initial_params(), TrainConfig(lr=0.02),
                                     np.random.default_rng(0))
    assert used == [0.02] and n == 64 and "train_loss" in metrics
    assert set(params) == {"lin.weight", "lin.bias"}
    assert strategy.aggregator.encode(params, n, {}, {})["lin.weight"].shape == (1, 2)
