"""`run_simulation`: federated training across the configured institutions, then the
local-only and pooled references, the comparison report and the results folder."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.sampling import UniformSampler
from fedsilo.client.local_data import LocalData
from fedsilo.config.build import build_schema, build_strategy
from fedsilo.config.schema import RunConfig
from fedsilo.core.params import Params
from fedsilo.data.prepare import (
    InstitutionSplit,
    federated_preprocessor,
    local_data,
    pooled,
    split_institutions,
)
from fedsilo.data.preprocessing import Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.engine.events import EventBus, Listener
from fedsilo.engine.sync_runner import RunHistory, RunSettings, run_sync
from fedsilo.errors import DataError
from fedsilo.evaluation.metrics import PRIMARY, weighted_mean
from fedsilo.evaluation.plots import plot_rounds
from fedsilo.evaluation.report import Comparison, build_comparison, write_comparison, write_history
from fedsilo.simulation.institutions import load_tables, make_clients, trainer_factory
from fedsilo.transport.inprocess import InProcessTransport

PhaseListener = Callable[[str, int], Listener | None]


@dataclass
class SimulationResult:
    config: RunConfig
    history: RunHistory
    comparison: Comparison | None
    feature_names: list[str]
    output_dir: Path | None = None

    @property
    def rounds(self) -> list[dict]:
        return [dataclasses.asdict(ev) for ev in self.history.events]

    @property
    def final(self) -> Mapping[str, float]:
        return self.history.events[-1].federated


def train(cfg: RunConfig, datas: Mapping[str, LocalData], strategy: Strategy, run_id: str,
          listener: Listener | None = None, evaluate_every: int | None = None) -> RunHistory:
    """One federated training over `datas` (one in-process Client per institution)."""
    any_data = next(iter(datas.values()))
    make = trainer_factory(cfg, any_data.num_features, any_data.num_outputs, any_data.task)
    clients = make_clients(datas, make, strategy.aggregator)
    initial = next(iter(clients.values())).trainer.initial_params()
    bus = EventBus()
    if listener is not None:
        bus.subscribe(listener)
    settings = RunSettings(run_id, cfg.run.seed, cfg.run.rounds,
                           evaluate_every or cfg.run.evaluate_every)
    return run_sync(strategy, InProcessTransport(clients), initial, settings, bus)


def run_simulation(cfg: RunConfig, phase: PhaseListener | None = None, write: bool = True,
                   tables: Mapping[str, pd.DataFrame] | None = None) -> SimulationResult:
    """Federated run plus (if `run.compare`) the local-only and pooled references.

    Args:
        cfg: the validated run config.
        phase: called with (phase name, rounds) before each training; may return a listener
            for that phase's round events (progress display).
        write: write the results folder.
        tables: institution name -> DataFrame, used instead of the config's data source.
    """
    torch.set_num_threads(cfg.run.torch_threads)
    phase = phase or (lambda name, rounds: None)
    tables = dict(tables) if tables is not None else load_tables(cfg)
    if not tables:
        raise DataError("no institutions: the data source holds no table")
    schema = build_schema(cfg, next(iter(tables.values())))
    splits = split_institutions(tables, schema, cfg.data.test_fraction, cfg.run.seed)
    pre = federated_preprocessor(splits, schema)
    datas = {s.name: local_data(s, pre) for s in splits}
    strategy = build_strategy(cfg)
    history = train(cfg, datas, strategy, cfg.run.name, phase("federated", cfg.run.rounds))
    comparison = None
    if cfg.run.compare:
        comparison = _compare(cfg, splits, schema, pre.classes, strategy,
                              history.events[-1].evaluation, phase)
    result = SimulationResult(cfg, history, comparison, pre.feature_names)
    if write:
        result.output_dir = write_results(result)
    return result


def _compare(cfg: RunConfig, splits: list[InstitutionSplit], schema: Schema,
             classes: tuple[str, ...], strategy: Strategy,
             federated: Mapping[str, Mapping[str, float]],
             phase: PhaseListener) -> Comparison:
    """Same recipe (model, client work, server optimizer, rounds), other data: each
    institution alone with its own preprocessing, and all rows pooled in one place."""
    alone = dataclasses.replace(strategy, sampler=UniformSampler(1.0, 1), min_replies=1)
    every = cfg.run.rounds
    local, local_everywhere = {}, {}
    for s in splits:
        own_pre = federated_preprocessor([s], schema, classes)
        h = train(cfg, {s.name: local_data(s, own_pre)}, alone, f"{cfg.run.name}/local/{s.name}",
                  phase(f"local-only {s.name}", every), every)
        scores = _score_everywhere(cfg, h.params, splits, own_pre)
        local[s.name] = scores[s.name]
        local_everywhere[s.name] = weighted_mean(list(scores.values()),
                                                 [len(x.test) for x in splits])
    all_rows = pooled(splits)
    pooled_pre = federated_preprocessor([all_rows], schema, classes)
    h = train(cfg, {"pooled": local_data(all_rows, pooled_pre)}, alone, f"{cfg.run.name}/pooled",
              phase("pooled", every), every)
    sizes = {s.name: len(s.test) for s in splits}
    return build_comparison(PRIMARY[schema.task], sizes, local, local_everywhere, federated,
                            _score_everywhere(cfg, h.params, splits, pooled_pre))


def _score_everywhere(cfg: RunConfig, params: Params, splits: list[InstitutionSplit],
                      pre: Preprocessor) -> dict[str, dict[str, float]]:
    """Metrics of one model on every institution's test rows, preprocessed by `pre`."""
    datas = {s.name: local_data(s, pre) for s in splits}
    any_data = next(iter(datas.values()))
    make = trainer_factory(cfg, any_data.num_features, any_data.num_outputs, any_data.task)
    return {name: make(d).evaluate(params)[1] for name, d in datas.items()}


def write_results(result: SimulationResult) -> Path:
    """results/<name>-<time>/: config, history (JSON, CSV), comparison (JSON, CSV), plot,
    final model (NPZ)."""
    cfg = result.config
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}"
    n = 1
    while folder.exists():
        folder = Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}-{n}"
        n += 1
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(cfg.model_dump_json(indent=2))
    write_history(result.rounds, folder)
    metric = PRIMARY[cfg.data.task]
    if result.comparison is not None:
        write_comparison(result.comparison, folder)
    plot_rounds(result.rounds, metric, folder / "metrics.png", result.comparison,
                title=f"{cfg.run.name}: {metric} per round")
    np.savez(folder / "model.npz", **result.history.params)  # type: ignore[arg-type]
    (folder / "features.json").write_text(json.dumps(result.feature_names))
    return folder
