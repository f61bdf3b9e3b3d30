"""Turning a run config's [data] section into institution tables."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from fedsilo.config.schema import RunConfig
from fedsilo.core.rng import generator
from fedsilo.core.trainer import Trainer
from fedsilo.data import partition
from fedsilo.data.loading import read_table
from fedsilo.data.local_data import LocalData
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
