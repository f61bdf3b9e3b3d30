"""A vertical run in simulation (run.mode = "vertical"): parties hold different columns of
the same customers. Private set intersection on `data.id` aligns the shared rows (no party
learns another's other IDs); each party standardises its own columns with its own training
rows' statistics (columns never leave it, so neither do their statistics); then the protocol
[model] kind names trains across the parties:

- logistic_regression / linear_regression: Hetero-LR (vertical/hetero_lr.py: homomorphic
  encryption, masked gradients);
- mlp: split learning (vertical/splitnn.py: one hidden layer per party's bottom model, a
  linear top model at the label holder; only activations and their gradients cross);
- xgboost: column-split trees on XGBoost's federated engine (trees/vertical.py).

The honest report trains the same recipe on other data: the label holder alone (its own
columns) and the pooled joined table (all columns in one place, simulation only), all scored
on the same held-out shared rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.config.schema import RunConfig
from fedsilo.core.rng import derive_seed, generator
from fedsilo.data.preprocessing import binarize_target
from fedsilo.data.schema import Schema
from fedsilo.errors import DataError
from fedsilo.evaluation.metrics import PRIMARY, compute
from fedsilo.simulation.institutions import load_tables
from fedsilo.vertical.psi import intersect

Blocks = dict[str, np.ndarray]


@dataclass
class VerticalResult:
    """Per reference ("label holder alone", "vertical", "pooled"), its test metrics; what
    each party held and what crossed between them."""

    config: RunConfig
    metric: str
    metrics: dict[str, dict[str, float]]
    shared: int
    parties: dict[str, dict[str, Any]] = field(default_factory=dict)
    wire: dict[str, int] = field(default_factory=dict)  # bytes per message kind
    output_dir: Path | None = None


def run_vertical(cfg: RunConfig, write: bool = True) -> VerticalResult:
    """Align, train the vertical model and its references, score them on the shared test rows.

    Raises:
        DataError: a party lacks the ID column, the label holder lacks the target, too few
            shared rows, or a column that is not numeric.
    """
    assert cfg.vertical is not None and cfg.data.id is not None
    d, holder = cfg.data, cfg.vertical.label_holder
    tables = load_tables(cfg)
    for name, table in tables.items():
        if d.id not in table.columns:  # type: ignore[union-attr]
            raise DataError(f"party '{name}' has no ID column '{d.id}' (data.id)")
    label_table = tables[holder]
    if d.target not in label_table.columns:  # type: ignore[union-attr]
        raise DataError(f"label holder '{holder}' has no target column '{d.target}'")
    ids = {n: t[d.id].astype(str).tolist() for n, t in tables.items()}  # type: ignore[index]
    rows = intersect(ids, hub=holder, rng=generator(cfg.run.seed, "psi"))
    aligned = {n: t.iloc[rows[n]].reset_index(drop=True)  # type: ignore[union-attr]
               for n, t in tables.items()}
    schema = Schema(d.target, d.task, ("_",), positive_above=d.positive_above)
    target = aligned[holder][d.target]
    keep = target.notna().to_numpy()
    y_raw = binarize_target(target[keep], schema).to_numpy(dtype=np.float64)
    test = _test_rows(int(keep.sum()), d.test_fraction, cfg.run.seed)
    columns = {n: [c for c in a.columns if c not in (d.id, d.target, *d.exclude)]
               for n, a in aligned.items()}
    blocks = {n: _standardised(aligned[n].loc[keep, columns[n]], test, n) for n in aligned}
    order = [holder, *sorted(n for n in blocks if n != holder)]
    train = ~test
    y = y_raw
    mean, std = 0.0, 1.0
    if d.task == "regression":
        mean, std = float(y[train].mean()), float(y[train].std() or 1.0)
        y = (y - mean) / std
    runs = {"label holder alone": {holder: blocks[holder]},
            "vertical": {n: blocks[n] for n in order},  # the joined table's column order
            "pooled": {holder: np.concatenate([blocks[n] for n in order], axis=1)}}
    metrics: dict[str, dict[str, float]] = {}
    wire: dict[str, int] = {}
    for label, parties in runs.items():
        pred = _train_and_predict(cfg, parties, y, train, test, holder,
                                  wire if label == "vertical" else None)
        if d.task == "regression":
            pred = pred * std + mean
        metrics[label] = compute(d.task, y_raw[test], pred)
    result = VerticalResult(cfg, PRIMARY[d.task], metrics, int(keep.sum()),
                            {n: {"rows": len(tables[n]), "columns": columns[n]}
                             for n in order}, wire)
    if write:
        result.output_dir = _write(result)
    return result


def _test_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """The held-out shared rows: the same for every party (rows are in one common order)."""
    if n < 4:
        raise DataError(f"only {n} shared rows with a label: too few to train and test")
    test = np.zeros(n, bool)
    test[generator(seed, "vertical", "split").permutation(n)[:math.ceil(fraction * n)]] = True
    return test


def _standardised(frame: pd.DataFrame, test: np.ndarray, party: str) -> np.ndarray:
    """A party's columns as float32, missing values imputed and every column standardised
    with the mean and deviation of its own training rows (computed where the columns are)."""
    try:
        x = frame.apply(pd.to_numeric, errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError):
        raise DataError(f"party '{party}': every column except data.id and the target must "
                        f"be numeric (list others in data.exclude)") from None
    train = x[~test]
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    x = np.where(np.isnan(x), mean, x)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _train_and_predict(cfg: RunConfig, parties: Mapping[str, np.ndarray], y: np.ndarray,
                       train: np.ndarray, test: np.ndarray, holder: str,
                       wire: dict[str, int] | None) -> np.ndarray:
    """Train [model] kind's vertical protocol on the training rows; predict the test rows."""
    assert cfg.vertical is not None
    v, kind, task = cfg.vertical, cfg.model.kind, cfg.data.task
    seed = derive_seed(cfg.run.seed, "vertical", "model") % 2**31
    fit = {n: x[train] for n, x in parties.items()}
    held = {n: x[test] for n, x in parties.items()}
    messages: list[Any] = []
    if kind in ("logistic_regression", "linear_regression"):
        from fedsilo.vertical.hetero_lr import fit_hetero_lr, predict_hetero

        weights = fit_hetero_lr(fit, y[train], holder, task, v.epochs, v.lr, v.batch_size,
                                seed, wire=messages)
        pred = predict_hetero(held, weights, task)
    elif kind == "mlp":
        pred = _splitnn(cfg, fit, held, y[train], holder, seed, messages)
    else:
        pred = _trees(cfg, fit, held, y[train], holder, seed)
    if wire is not None:
        for m in messages:
            wire[m.kind] = wire.get(m.kind, 0) + len(m.payload)
    return np.asarray(pred, np.float64)


def _splitnn(cfg: RunConfig, fit: Blocks, held: Blocks, y: np.ndarray, holder: str,
             seed: int, messages: list[Any]) -> np.ndarray:
    import torch
    from torch import nn

    from fedsilo.vertical.splitnn import fit_splitnn, predict_splitnn

    assert cfg.vertical is not None
    v, hidden = cfg.vertical, cfg.model.hidden[0]
    outputs = 1 if cfg.data.task != "multiclass" else int(y.max()) + 1
    torch.manual_seed(seed)
    bottoms: dict[str, nn.Module] = {n: nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU())
                                     for n, x in fit.items()}
    top = nn.Linear(hidden * len(fit), outputs)
    bottoms, top = fit_splitnn(fit, y, holder, bottoms, top, cfg.data.task, v.epochs, v.lr,
                               v.batch_size, seed, noise_std=v.noise, wire=messages)
    return predict_splitnn(held, bottoms, top, cfg.data.task)


def _trees(cfg: RunConfig, fit: Blocks, held: Blocks, y: np.ndarray, holder: str,
           seed: int) -> np.ndarray:
    from fedsilo.trees.vertical import predict_vertical, train_vertical
    from fedsilo.trees.xgb import booster_params

    task = cfg.data.task
    classes = int(y.max()) + 1 if task == "multiclass" else 2
    params = booster_params({"params": cfg.model.params, "seed": seed}, task, classes)
    if len(fit) == 1:  # a reference on one party's table: the same XGBoost, alone
        import xgboost

        booster = xgboost.train(params, xgboost.DMatrix(fit[holder], label=y), cfg.run.rounds)
        return np.asarray(booster.predict(xgboost.DMatrix(held[holder])))
    model = train_vertical(fit, holder, y, params, cfg.run.rounds)
    return predict_vertical(model.models, held, holder)[holder]


def _write(result: VerticalResult) -> Path:
    from fedsilo.store.disk import writing
    from fedsilo.store.recorder import new_run
    from fedsilo.store.redact import redact_config

    cfg = result.config
    _, folder = new_run(Path(cfg.run.output_dir), cfg.run.name)
    with writing(folder):
        (folder / "config.json").write_text(json.dumps(
            redact_config(cfg.model_dump(mode="json")), indent=2))
        (folder / "comparison.json").write_text(json.dumps(
            {"metric": result.metric, "shared_rows": result.shared, "metrics": result.metrics,
             "parties": result.parties, "wire_bytes": result.wire}, indent=2))
    return folder
