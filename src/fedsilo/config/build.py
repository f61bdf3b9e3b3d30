"""Builds strategies and schemas from a validated config."""

from __future__ import annotations

import pandas as pd

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import fedavg, fedsgd
from fedsilo.algorithms.fedopt import fedadam, fedavgm
from fedsilo.config.schema import RunConfig
from fedsilo.data.schema import Schema
from fedsilo.optim import sgd


def build_strategy(cfg: RunConfig) -> Strategy:
    """The strategy named in [strategy], with the [client] settings its tasks carry."""
    s, client = cfg.strategy, cfg.client.train_config()
    common = {"fraction": s.fraction, "min_clients": s.min_clients, "weighted": s.weighted}
    if s.name == "fedsgd":
        return fedsgd(s.server_lr or cfg.client.lr, **common)
    if s.name == "fedadam":
        return fedadam(client, server_lr=s.server_lr or 0.01, beta1=s.beta1, beta2=s.beta2,
                       eps=s.eps, **common)
    if s.name == "fedavgm":
        return fedavgm(client, server_lr=s.server_lr or 1.0, momentum=s.momentum, **common)
    return fedavg(client, optimizer=sgd(s.server_lr or 1.0), **common)


def build_schema(cfg: RunConfig, sample: pd.DataFrame) -> Schema:
    """The data schema: declared numeric columns, or every column not otherwise named."""
    d = cfg.data
    extra = {"positive_above": d.positive_above, "scale_target": d.scale_target}
    exclude = list(d.exclude)
    split_column = d.partition.column if d.partition is not None else None
    if split_column and split_column not in d.categorical:
        exclude.append(split_column)
    if d.numeric is not None:
        return Schema(d.target, d.task, tuple(d.numeric), tuple(d.categorical), **extra)
    return Schema.infer(sample, d.target, d.task, d.categorical, exclude, **extra)
