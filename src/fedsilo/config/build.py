"""Builds strategies, schemas and the run setup (model, aggregator, preprocessing specs) from a
validated config. The setup travels in every task, so institutions build what the server
built."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fedsilo.aggregation.build import build_aggregator
from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import fedavg, fedsgd
from fedsilo.config.schema import RunConfig
from fedsilo.core.rng import derive_seed
from fedsilo.data.preprocessing import Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.optim import ServerOptimizer, adam, sgd


def model_spec(cfg: RunConfig) -> dict[str, Any]:
    return {"kind": cfg.model.kind, "framework": cfg.model.framework,
            "hidden": list(cfg.model.hidden), "seed": derive_seed(cfg.run.seed, "model")}


def aggregator_spec(cfg: RunConfig) -> dict[str, Any]:
    a = cfg.aggregation
    spec: dict[str, Any] = {"layer": "mean", "weighted": cfg.strategy.weighted}
    if a.secure == "ckks":
        spec["secure"] = {"protocol": "ckks"}
    elif a.secure != "none":
        spec["secure"] = {"protocol": a.secure, "threshold": a.threshold,
                          "neighbours": a.neighbours, "frac_bits": a.frac_bits,
                          "max_abs": a.max_abs}
    return spec


def run_setup(cfg: RunConfig, prepare: Mapping[str, Any],
              preprocessor: Preprocessor) -> dict[str, Any]:
    """What every task carries so an institution can build its client: how to read and split
    its data, the fitted preprocessing, the model and the aggregator's client half."""
    return {"data": dict(prepare), "preprocessor": preprocessor.to_dict(),
            "model": model_spec(cfg), "aggregator": aggregator_spec(cfg)}


def build_strategy(cfg: RunConfig, setup: Mapping[str, Any] | None = None,
                   keys: Mapping[str, bytes] | None = None) -> Strategy:
    """The strategy named in [strategy]; its tasks carry the [client] settings and `setup`.
    `keys`: the server's local key material (the CKKS public context)."""
    strategy = _strategy(cfg, keys)
    if setup is None:
        return strategy
    return dataclasses.replace(strategy, client_config={**strategy.client_config,
                                                        "setup": dict(setup)})


def _strategy(cfg: RunConfig, keys: Mapping[str, bytes] | None) -> Strategy:
    s, client = cfg.strategy, cfg.client.train_config()
    aggregator = build_aggregator(aggregator_spec(cfg), keys)
    if s.name == "fedsgd":
        return fedsgd(s.server_lr or cfg.client.lr, fraction=s.fraction,
                      min_clients=s.min_clients, aggregator=aggregator)
    optimizer: ServerOptimizer
    if s.name == "fedadam":
        optimizer = adam(s.server_lr or 0.01, s.beta1, s.beta2, s.eps)
    elif s.name == "fedavgm":
        optimizer = sgd(s.server_lr or 1.0, s.momentum)
    else:
        optimizer = sgd(s.server_lr or 1.0)
    return fedavg(client, fraction=s.fraction, min_clients=s.min_clients, aggregator=aggregator,
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
