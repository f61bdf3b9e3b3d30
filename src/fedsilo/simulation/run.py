"""`run_simulation`: federated training across the configured institutions, then the
local-only and pooled references, the comparison report and the results folder."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedsilo.client.factory import ModelCache, make_trainer
from fedsilo.client.institution import Institution
from fedsilo.client.training import report_on_test
from fedsilo.client.user_functions import metric_name
from fedsilo.config.build import build_clock, build_schema
from fedsilo.config.schema import PrivacySection, RunConfig
from fedsilo.data.checks import check_table
from fedsilo.data.prepare import InstitutionSplit, Table, local_data, pooled
from fedsilo.data.schema import Schema
from fedsilo.engine.events import Listener
from fedsilo.engine.flow import RunHistory
from fedsilo.errors import DataError
from fedsilo.evaluation.metrics import REPORTED, weighted_mean
from fedsilo.evaluation.plots import plot_rounds
from fedsilo.evaluation.report import Comparison, build_comparison, write_comparison, write_history
from fedsilo.session import SessionResult, run_session
from fedsilo.simulation.attacks import with_attackers
from fedsilo.simulation.institutions import load_tables
from fedsilo.transport.inprocess import Handler, InProcessTransport

if TYPE_CHECKING:
    from fedsilo.simulation.ray_backend import RayTransport

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


def run_simulation(cfg: RunConfig, phase: PhaseListener | None = None, write: bool = True,
                   tables: Mapping[str, Table] | None = None) -> SimulationResult:
    """Federated run plus (if `run.compare`) the local-only and pooled references.

    Args:
        cfg: the validated run config.
        phase: called with (phase name, rounds) before each training; may return a listener
            for that phase's round events (progress display).
        write: write the results folder.
        tables: institution name -> DataFrame (or ArrayData), used instead of the config's
            data source.
    """
    torch.set_num_threads(cfg.run.torch_threads)
    phase = phase or (lambda name, rounds: None)
    if cfg.simulation.backend == "ray":
        return _on_ray(cfg, phase, write, tables)
    tables = dict(tables) if tables is not None else load_tables(cfg)
    if not tables:
        raise DataError("no institutions: the data source holds no table")
    schema = build_schema(cfg, next(iter(tables.values())))
    for name, table in tables.items():  # what each institution checks, before a run starts
        check_table(table, schema, name)
    models = ModelCache()
    secret, public = _keys(cfg, sorted(tables), signed=write)
    institutions = {n: Institution(n, t, models, keys=secret[n])
                    for n, t in sorted(tables.items())}
    handlers: dict[str, Handler] = dict(institutions)
    if cfg.attack.fraction:
        handlers, _ = with_attackers(institutions, cfg.attack.fraction, cfg.attack.kind,
                                     cfg.attack.scale, cfg.run.seed)
    return _federate(cfg, InProcessTransport(handlers), schema, public, phase, write,
                     lambda: institutions)


def _on_ray(cfg: RunConfig, phase: PhaseListener, write: bool,
            tables: Mapping[str, Table] | None) -> SimulationResult:
    """The same run with the institutions on a pool of Ray actors (simulation/ray_backend.py);
    the local-only and pooled references (which put data in one place by definition) train
    here, in process, on tables read here."""
    from fedsilo.simulation.ray_backend import RayTransport, Source, require_ray

    ray = require_ray()
    pool = RayTransport(Source(cfg, None if tables is None else
                               {n: ray.put(t) for n, t in tables.items()}), cfg.simulation)
    try:
        if not pool.names:
            raise DataError("no institutions: the data source holds no table")
        secret, public = _keys(cfg, pool.names, signed=write)
        pool.open(secret)

        def here() -> dict[str, Institution]:
            local = dict(tables) if tables is not None else load_tables(cfg)
            return {n: Institution(n, t) for n, t in sorted(local.items())}

        return _federate(cfg, pool, pool.schema, public, phase, write, here)
    finally:
        pool.close()


def _federate(cfg: RunConfig, transport: InProcessTransport | RayTransport, schema: Schema,
              public: dict[str, bytes], phase: PhaseListener, write: bool,
              institutions: Callable[[], Mapping[str, Institution]]) -> SimulationResult:
    """The federated session over `transport`, the references (`institutions`: the
    institutions in this process), the run's record."""
    recorder = None
    if write:  # the store (SQLAlchemy) is imported only for a run that is recorded
        from fedsilo.store.recorder import start_run

        recorder = start_run(cfg, cfg.primary_metric())
    try:
        run_id = recorder.run_id if recorder is not None else cfg.run.name
        session = run_session(cfg, transport, schema, run_id,
                              listener=phase("federated", cfg.run.rounds), keys=public,
                              recorder=recorder, clock=build_clock(cfg, "virtual"))
        comparison = (_compare(cfg, institutions(), session, phase) if cfg.run.compare
                      else None)
        result = SimulationResult(cfg, session.history, comparison,
                                  session.preprocessor.feature_names)
        if recorder is not None:  # "finished" only once the model and results are on disk
            write_results(result, recorder.folder)
    except BaseException:
        if recorder is not None:
            recorder.finish("failed")
        raise
    if recorder is not None:
        recorder.finish("finished", comparison.to_dict() if comparison else None)
    return result


def _keys(cfg: RunConfig, names: list[str], signed: bool) -> tuple[dict[str, dict[str, bytes]],
                                                                  dict[str, bytes]]:
    """Key material a simulation makes up front, only where it is used: per institution, its
    identity key and certificate (they sign SecAgg+'s advertised keys, CKKS's ciphertext
    packages and, in a recorded run, every update for the audit trail), and the server's CA
    certificate. No CKKS key: each round's is made by the key-holding institution."""
    if signed or cfg.aggregation.secure in ("secagg+", "secagg", "ckks"):
        from fedsilo.aggregation.secure.identity import SimulatedCA

        ca = SimulatedCA()
        return {n: ca.keys(n) for n in names}, ca.trust_keys()
    return {n: {} for n in names}, {}


def _compare(cfg: RunConfig, institutions: Mapping[str, Institution], fed: SessionResult,
             phase: PhaseListener) -> Comparison:
    """Same recipe (model, client work, server optimizer, rounds), other data: each
    institution alone with its own preprocessing, and all training rows pooled in one place.
    Every model is scored on the same held-out rows as the federated one. The references
    are trained without differential privacy (an institution alone, or a pooled table, needs
    no protection from the others) and with BatchNorm averaged (over one institution); under
    DP the same federation is also trained without it, so that the cost of privacy shows."""
    schema, classes = fed.preprocessor.schema, fed.preprocessor.classes
    no_dp = cfg.model_copy(update={"privacy": PrivacySection()})
    alone = no_dp.model_copy(update={  # one institution: nothing to hide, no one to distrust
        "run": cfg.run.model_copy(update={"mode": "sync"}),  # references train synchronously
        "strategy": cfg.strategy.model_copy(update=_reference_strategy(cfg)),
        "aggregation": cfg.aggregation.model_copy(update={"secure": "none", "robust": "none",
                                                          "norm_bound": None}),
        # one institution: its BatchNorm is the model's (FedBN's local entries, once averaged
        # over one, are its own), so the reference scores with them everywhere
        "model": cfg.model.model_copy(update={"batchnorm": "average"}),
        "personalization": cfg.personalization.model_copy(update={
            "finetune_epochs": 0, "ditto_lambda": None})})
    splits = [inst.split(fed.setup["data"]) for inst in institutions.values()]
    local, local_everywhere = {}, {}
    for name, inst in institutions.items():
        own = run_session(alone, InProcessTransport({name: Institution(name, split=inst.split(
            fed.setup["data"]))}), schema, f"{cfg.run.name}/local/{name}",
            listener=phase(f"local-only {name}", cfg.run.rounds),
            evaluate_every=cfg.run.rounds, classes=classes, clock=build_clock(cfg, "virtual"))
        scores = _score_everywhere(cfg, own, splits)
        local[name] = scores[name]
        local_everywhere[name] = weighted_mean(list(scores.values()),
                                               [len(s.test) for s in splits])
    everyone = Institution("pooled", split=pooled(splits))
    pool = run_session(alone, InProcessTransport({"pooled": everyone}), schema,
                       f"{cfg.run.name}/pooled", listener=phase("pooled", cfg.run.rounds),
                       evaluate_every=cfg.run.rounds, classes=classes,
                       clock=build_clock(cfg, "virtual"))
    without_dp = None
    if cfg.privacy.mode != "none":  # same federation, same data, no noise and no clipping
        plain = no_dp.model_copy(update={"aggregation": cfg.aggregation.model_copy(
            update={"secure": "none"})})
        members = {n: Institution(n, split=inst.split(fed.setup["data"]))
                   for n, inst in institutions.items()}
        session = run_session(plain, InProcessTransport(dict(members)), schema,
                              f"{cfg.run.name}/no-dp",
                              listener=phase("federated, no DP", cfg.run.rounds),
                              evaluate_every=cfg.run.rounds, classes=classes,
                              clock=build_clock(cfg, "virtual"))
        without_dp = session.history.events[-1].evaluation
    sizes = {s.name: len(s.test) for s in splits}
    federated = fed.history.events[-1].evaluation
    pooled_scores = _score_everywhere(cfg, pool, splits)
    main = build_comparison(cfg.primary_metric(), sizes, local, local_everywhere, federated,
                            pooled_scores, without_dp)
    if cfg.model.batchnorm != "local":  # FedBN's model differs per institution: not rescored
        rescored = _score_everywhere(cfg, fed, splits)
        federated = {n: {**rescored[n], **federated.get(n, {})} for n in rescored}
    tables = (local, local_everywhere, federated, pooled_scores)
    others = [build_comparison(m, sizes, local, local_everywhere, federated, pooled_scores)
              for m in _further_metrics(cfg, schema.task)
              if all(m in t.get(n, {}) for t in tables for n in sizes)]
    return main.with_others(others)


def _further_metrics(cfg: RunConfig, task: str) -> list[str]:
    """The report's metrics beside the primary one: the task's (AUC; R² and MAE) unless the
    primary metric is the run's own, then the run's own ([evaluation] metrics, by name)."""
    own = [metric_name(path) for path in cfg.evaluation.metrics]
    primary = cfg.primary_metric()
    task_metrics = [] if primary in own else list(REPORTED[task])
    return [m for m in (*task_metrics, *own) if m != primary]


def _reference_strategy(cfg: RunConfig) -> dict:
    """The strategy of the local-only and pooled references: the same, on one institution;
    FedAvg for an asynchronous run (one institution has no one to wait for)."""
    update: dict = {"fraction": 1.0, "min_clients": 1, "stragglers": 0.0}
    if cfg.run.mode == "async":
        update["name"] = "fedavg"
    return update


def _score_everywhere(cfg: RunConfig, session: SessionResult,
                      splits: list[InstitutionSplit]) -> dict[str, dict[str, float]]:
    """Metrics of a session's final model on every institution's test rows, preprocessed
    the way that session preprocessed its own data, the report's further metrics included."""
    out = {}
    for s in splits:
        data = local_data(s, session.preprocessor)
        trainer = make_trainer(session.setup["model"], data)
        params = session.history.params
        out[s.name] = {**trainer.evaluate(params)[1], **report_on_test(trainer, data, params)}
    return out


def write_results(result: SimulationResult, folder: Path | None = None) -> Path:
    """results/<run id>/: config, history (JSON, CSV), comparison (JSON, CSV), plot, final
    model (NPZ); beside the run store (results/fedsilo.db) and the checkpoint."""
    cfg = result.config
    if folder is None:
        from fedsilo.store.recorder import new_run

        _, folder = new_run(Path(cfg.run.output_dir), cfg.run.name)
    result.output_dir = folder
    from fedsilo.store.disk import writing

    with writing(folder):  # disk full, read-only: a ConfigError naming the path (exit 2)
        from fedsilo.store.redact import redact_config  # the store URL's password stays out

        (folder / "config.json").write_text(
            json.dumps(redact_config(cfg.model_dump(mode="json")), indent=2))
        write_history(result.rounds, folder)
        metric = cfg.primary_metric()
        if result.comparison is not None:
            write_comparison(result.comparison, folder)
        plot_rounds(result.rounds, metric, folder / "metrics.png", result.comparison,
                    title=f"{cfg.run.name}: {metric} per round")
        np.savez(folder / "model.npz", **result.history.params)  # type: ignore[arg-type]
        (folder / "features.json").write_text(json.dumps(result.feature_names))
    return folder
