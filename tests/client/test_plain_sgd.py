"""The default optimizer's plain case (SGD, no momentum, no weight decay) steps without
torch.optim: the same parameters bit for bit, and torch._dynamo never imported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from torch import nn

from fedsilo.client.torch_trainer import PlainSGD, TorchTrainer
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData

SCRIPT = """
import sys
import numpy as np
import torch
from torch import nn
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
rng = np.random.default_rng(0)
x = rng.standard_normal((60, 5)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.float32)
trainer = TorchTrainer(nn.Linear(5, 1), LocalData(x, y, x, y, "binary"))
trainer.fit(trainer.initial_params(), TrainConfig(epochs=2, batch_size=8, lr=0.1), rng)
print("torch._dynamo" in sys.modules)
"""


def data(seed: int = 0) -> LocalData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = rng.integers(0, 3, 120).astype(np.float32)
    return LocalData(x, y, x[:20], y[:20], "multiclass", 3)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_plain_sgd_trains_bit_for_bit_as_torch_optim_sgd() -> None:
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    ours = TorchTrainer(mlp(), data())
    theirs = TorchTrainer(mlp(), data(),
                          optimizer=lambda ps, c: torch.optim.SGD(ps, lr=c.lr))
    assert isinstance(ours._optimizer(cfg), PlainSGD)
    start = ours.initial_params()
    a, _, ma = ours.fit(start, cfg, np.random.default_rng(1))
    b, _, mb = theirs.fit(start, cfg, np.random.default_rng(1))
    assert ma == mb
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert any(not np.array_equal(a[n], start[n]) for n in a)  # it did train


def test_momentum_or_weight_decay_use_torch_optim() -> None:
    trainer = TorchTrainer(mlp(), data())
    for cfg in (TrainConfig(lr=0.1, momentum=0.9), TrainConfig(lr=0.1, weight_decay=1e-4),
                TrainConfig(lr=0.1, optimizer="adam")):
        assert isinstance(trainer._optimizer(cfg), torch.optim.Optimizer)


def test_a_default_fit_never_imports_torch_dynamo() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
