"""Turning a run config's [data] section into institution tables, and tables into Clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from fedsilo.aggregation.base import Layer
from fedsilo.client.client import Client
from fedsilo.client.local_data import LocalData
from fedsilo.client.models import build_model
from fedsilo.client.sklearn_trainer import SklearnTrainer
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.client.trainer import Trainer
from fedsilo.config.schema import RunConfig
from fedsilo.core.rng import derive_seed, generator
from fedsilo.data import partition
from fedsilo.data.loading import read_table
from fedsilo.errors import ConfigError, DataError

TrainerFactory = Callable[[LocalData], Trainer]


def load_tables(cfg: RunConfig) -> dict[str, pd.DataFrame]:
    """One table per institution: its own CSV, or a partition of one CSV."""
    d = cfg.data
    if d.institutions:
        return {i.name: read_table(cfg.resolve(i.path), d.columns, d.na_values)
                for i in d.institutions}
    if d.partition is None:
        raise ConfigError("data: no source; give [[data.institutions]] (one CSV each), "
                          "[data.partition] (one CSV to split), or tables in Python")
    p = d.partition
    frame = read_table(cfg.resolve(p.path), d.columns, d.na_values)
    if p.method == "column":
        assert p.column is not None
        parts = partition.by_column(frame, p.column, p.merge)
        return {name: frame.iloc[idx].reset_index(drop=True) for name, idx in parts.items()}
    k = p.institutions or 1
    rng = generator(cfg.run.seed, "partition")
    if p.method == "dirichlet":
        if d.task == "regression":
            raise ConfigError("data.partition: method 'dirichlet' (label skew) needs a "
                              "classification task")
        if d.target not in frame.columns:
            raise DataError(f"partition: target column '{d.target}' not in {cfg.resolve(p.path)}")
        idx_list = partition.dirichlet(frame[d.target].astype(str).to_numpy(), k, p.alpha, rng)
    elif p.method == "quantity":
        idx_list = partition.quantity_skew(len(frame), k, p.alpha, rng)
    else:
        idx_list = partition.iid(len(frame), k, rng)
    width = len(str(k - 1))
    return {f"inst-{i:0{width}d}": frame.iloc[idx].reset_index(drop=True)
            for i, idx in enumerate(idx_list)}


def trainer_factory(cfg: RunConfig, num_features: int, num_outputs: int,
                    task: str) -> TrainerFactory:
    """Makes trainers that share one seeded model object (institutions run one at a time)."""
    if cfg.model.framework == "sklearn":
        return SklearnTrainer
    model = build_model(cfg.model.kind, num_features, num_outputs, task, cfg.model.hidden,
                        seed=derive_seed(cfg.run.seed, "model"))
    return lambda data: TorchTrainer(model, data)


def make_clients(datas: Mapping[str, LocalData], make: TrainerFactory,
                 encoder: Layer) -> dict[str, Client]:
    return {name: Client(name, make(data), encoder) for name, data in datas.items()}
