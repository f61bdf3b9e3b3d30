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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.config.schema import RunConfig
from fedsilo.config.vertical import vertical_event, vertical_layout, vertical_recipe
from fedsilo.core.rng import generator
from fedsilo.engine.events import RoundEvent
from fedsilo.evaluation.metrics import PRIMARY, compute
from fedsilo.simulation.institutions import load_tables
from fedsilo.store.recorder import Recorder, start_run
from fedsilo.vertical.local import ids_of, label_scale, labelled, party_block
from fedsilo.vertical.protocols import fit_predict
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

    def comparison(self) -> dict[str, Any]:
        """What results/<run id>/comparison.json and the run store hold."""
        return {"metric": self.metric, "shared_rows": self.shared, "references": self.metrics,
                "parties": self.parties, "wire_bytes": self.wire}


def run_vertical(cfg: RunConfig, write: bool = True) -> VerticalResult:
    """Align, train the vertical model and its references, score them on the shared test rows.

    Raises:
        DataError: a party lacks the ID column, the label holder lacks the target, too few
            shared rows, or a column that is not numeric.
    """
    assert cfg.vertical is not None and cfg.data.id is not None
    d, holder = cfg.data, cfg.vertical.label_holder
    layout = vertical_layout(cfg)
    tables = {n: labelled(t, layout, n, n == holder)  # type: ignore[arg-type]
              for n, t in load_tables(cfg).items()}
    ids = {n: ids_of(t, layout) for n, t in tables.items()}
    rows = intersect(ids, hub=holder, rng=generator(cfg.run.seed, "psi"))
    parts = {n: party_block(t, rows[n], layout, n, n == holder) for n, t in tables.items()}
    y_raw, test = parts[holder].y, parts[holder].test
    assert y_raw is not None
    blocks = {n: p.x for n, p in parts.items()}
    order_names = [holder, *sorted(n for n in blocks if n != holder)]
    train = ~test
    mean, std = label_scale(y_raw[train], d.task)
    y = (y_raw - mean) / std
    runs = {"label holder alone": {holder: blocks[holder]},
            "vertical": {n: blocks[n] for n in order_names},  # the joined table's column order
            "pooled": {holder: np.concatenate([blocks[n] for n in order_names], axis=1)}}
    metrics: dict[str, dict[str, float]] = {}
    wire: dict[str, int] = {}
    for label, parties in runs.items():
        pred = _train_and_predict(cfg, parties, y, train, test, holder,
                                  wire if label == "vertical" else None)
        if d.task == "regression":
            pred = pred * std + mean
        metrics[label] = compute(d.task, y_raw[test], pred)
    result = VerticalResult(cfg, PRIMARY[d.task], metrics, len(y_raw),
                            {n: {"rows": len(tables[n]), "columns": parts[n].columns}
                             for n in order_names}, wire)
    if write:
        result.output_dir = _write(result)
    return result


def _train_and_predict(cfg: RunConfig, parties: Mapping[str, np.ndarray], y: np.ndarray,
                       train: np.ndarray, test: np.ndarray, holder: str,
                       wire: dict[str, int] | None) -> np.ndarray:
    """Train [model] kind's vertical protocol on the training rows; predict the test rows."""
    recipe = vertical_recipe(cfg)
    fit = {n: x[train] for n, x in parties.items()}
    held = {n: x[test] for n, x in parties.items()}
    messages: list[Any] = []
    if recipe.protocol == "trees":
        pred = _trees(cfg, fit, held, y[train], holder, recipe.seed)
    else:
        pred = fit_predict(recipe, fit, held, y[train], holder, messages)
    if wire is not None:
        for m in messages:
            wire[m.kind] = wire.get(m.kind, 0) + len(m.payload)
    return np.asarray(pred, np.float64)


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
    cfg = result.config
    assert cfg.vertical is not None
    event = vertical_event(cfg, {cfg.vertical.label_holder: result.metrics["vertical"]})
    return record_vertical(cfg, start_run(cfg, result.metric), event, result.comparison())


def record_vertical(cfg: RunConfig, recorder: Recorder, event: RoundEvent,
                    comparison: Mapping[str, Any]) -> Path:
    """results/<run id>/ (config.json, comparison.json) and the run store's record: the round
    event (in the signed audit chain) and the comparison, for the dashboard."""
    from fedsilo.store.disk import writing
    from fedsilo.store.redact import redact_config

    folder = recorder.folder
    recorder(event)
    with writing(folder):
        (folder / "config.json").write_text(json.dumps(
            redact_config(cfg.model_dump(mode="json")), indent=2))
        (folder / "comparison.json").write_text(json.dumps(comparison, indent=2))
    recorder.finish("finished", comparison)
    return folder
