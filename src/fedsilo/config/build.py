"""Builds strategies and schemas from a validated config."""

from __future__ import annotations

import pandas as pd

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import fedavg, fedsgd
from fedsilo.config.schema import RunConfig
from fedsilo.data.schema import Schema
from fedsilo.optim import ServerOptimizer, adam, sgd


def build_strategy(cfg: RunConfig) -> Strategy:
    """The strategy named in [strategy], with the [client] settings its tasks carry."""
    s, client = cfg.strategy, cfg.client.train_config()
    if s.name == "fedsgd":
        return fedsgd(s.server_lr or cfg.client.lr, fraction=s.fraction,
                      min_clients=s.min_clients, weighted=s.weighted)
    optimizer: ServerOptimizer
    if s.name == "fedadam":
        optimizer = adam(s.server_lr or 0.01, s.beta1, s.beta2, s.eps)
    elif s.name == "fedavgm":
        optimizer = sgd(s.server_lr or 1.0, s.momentum)
    else:
        optimizer = sgd(s.server_lr or 1.0)
    return fedavg(client, fraction=s.fraction, min_clients=s.min_clients, weighted=s.weighted,
                  optimizer=optimizer, name=s.name)


def build_schema(cfg: RunConfig, sample: pd.DataFrame) -> Schema:
    """The data schema: declared numeric columns, or every column not otherwise named."""
    d = cfg.data
    exclude = list(d.exclude)
    split_column = d.partition.column if d.partition is not None else None
    if split_column and split_column not in d.categorical:
        exclude.append(split_column)
    skip = {d.target, *d.categorical, *exclude}
    numeric = d.numeric if d.numeric is not None else [c for c in sample.columns if c not in skip]
    return Schema(d.target, d.task, tuple(numeric), tuple(d.categorical),
                  positive_above=d.positive_above, scale_target=d.scale_target)
