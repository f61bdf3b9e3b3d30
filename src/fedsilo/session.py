"""A training session from a run config over any transport: the prepare stage (federated
preprocessing), then the synchronous rounds. Simulation passes an in-process transport of
Institutions; the deployment server passes the gRPC transport. Nothing else differs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.client.factory import make_trainer
from fedsilo.client.user_model import with_architecture
from fedsilo.config.build import (
    build_clock,
    build_strategy,
    model_spec,
    privacy_accountant,
    run_setup,
)
from fedsilo.config.schema import RunConfig
from fedsilo.core.params import Params
from fedsilo.core.transport import ServerTransport
from fedsilo.data.local_data import LocalData
from fedsilo.data.preprocessing import Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.engine.clock import Clock
from fedsilo.engine.drivers import train
from fedsilo.engine.events import EventBus, Listener
from fedsilo.engine.flow import RunHistory, RunSettings
from fedsilo.engine.prepare import federated_preprocessing, prepare_config
from fedsilo.engine.secure_prepare import prepare_spec
from fedsilo.errors import PrivacyBudgetExhausted
from fedsilo.trees.xgb import TrackerTls

if TYPE_CHECKING:
    from fedsilo.store.recorder import Recorder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trees:
    """Where a federated XGBoost run's tracker listens (`port` None: a free one) and the
    mutual-TLS files it serves with (None: none, in a simulation only)."""

    host: str = "127.0.0.1"
    port: int | None = None
    tls: TrackerTls | None = None


@dataclass
class SessionResult:
    history: RunHistory
    preprocessor: Preprocessor
    setup: dict[str, Any]
    train_rows: dict[str, int]


def initial_params(cfg: RunConfig, pre: Preprocessor) -> Params:
    """The starting model: built fresh from the run's model spec (seeded), so every session
    of a run (federated, local-only, pooled, simulated or deployed) starts from the same
    weights."""
    task = pre.schema.task
    width = len(pre.feature_names)
    empty = np.zeros((0, width), np.float32)
    data = LocalData(empty, np.zeros(0, np.float32), empty, np.zeros(0, np.float32), task,
                     len(pre.classes) if task != "regression" else 1)
    # a factory model is built here exactly as at the institutions (client/user_model.py)
    return make_trainer(model_spec(cfg), data).initial_params()


def rounds_within_budget(cfg: RunConfig) -> int:
    """cfg.run.rounds, or fewer if the privacy budget (target ε at δ) runs out first.

    Raises:
        PrivacyBudgetExhausted: not even one round fits the budget.
    """
    accountant = privacy_accountant(cfg)
    target = cfg.privacy.target_epsilon
    if accountant is None or target is None:
        return cfg.run.rounds
    allowed = accountant.max_rounds(target, cfg.run.rounds)
    if allowed == 0:
        raise PrivacyBudgetExhausted(f"privacy: one round already costs ε = "
                                     f"{accountant.epsilon(1):.3g} > target {target}")
    if allowed < cfg.run.rounds:
        log.info("privacy budget ε = %s at δ = %s allows %d of %d rounds: stopping there",
                    target, accountant.delta, allowed, cfg.run.rounds)
    return allowed


def run_session(cfg: RunConfig, transport: ServerTransport, schema: Schema, run_id: str,
                read: Mapping[str, Any] | None = None, listener: Listener | None = None,
                evaluate_every: int | None = None, classes: tuple[str, ...] | None = None,
                timeout: float | None = None,
                keys: Mapping[str, bytes] | None = None, recorder: Recorder | None = None,
                resume: bool = False, clock: Clock = None,
                trees: Trees | None = None) -> SessionResult:
    """Prepare stage, then `cfg.run.rounds` rounds over `transport`.

    Args:
        read: how institutions read their CSV (columns of a header-less file, NA markers).
        classes: force the class set (a single institution may lack a class).
        timeout: per-stage deadline in seconds (None in simulation).
        keys: the server's local key material (the CKKS public context).
        recorder: run store, checkpoints, TensorBoard (fed by the round events).
        resume: continue after the recorder's last checkpoint.
        clock: the clock to drive the run under; default the one [clock] names, else the
            wall clock (a simulation passes the virtual one).
        trees: where XGBoost's tracker listens, and its TLS (kind "xgboost"; default: a free
            loopback port without TLS, for a simulation).
    Raises:
        ConfigError: the institutions available cannot run `cfg` (e.g. too few for the
            SecAgg+ threshold); DataError: an institution found its data unusable.
    """
    cfg.check_institutions(len(transport.clients()))
    prepare = prepare_config(schema, read or {}, cfg.data.test_fraction, cfg.run.seed)
    secure = prepare_spec(cfg.aggregation, cfg.data, cfg.run.seed, schema)
    pre, admission = federated_preprocessing(
        transport, {**prepare, "secure": secure} if secure else prepare, run_id,
        cfg.strategy.min_clients, timeout, classes, cfg.data.max_levels, keys)
    setup = run_setup(cfg, prepare, pre, len(admission.train_rows))
    bus = EventBus()
    if recorder is not None:
        bus.subscribe(recorder)
    if listener is not None:
        bus.subscribe(listener)
    if cfg.model.kind == "xgboost":  # trees: XGBoost's collective, not the round flow
        from fedsilo.trees.boost import boost

        tracker = trees or Trees()
        history = boost(transport, setup, run_id, bus, tracker.host, tracker.port,
                        tracker.tls, timeout)
        return SessionResult(history, pre, setup, dict(admission.train_rows))
    rounds = rounds_within_budget(cfg)
    settings = RunSettings(run_id, cfg.run.seed, rounds,
                           evaluate_every or cfg.run.evaluate_every, timeout,
                           audit=recorder is not None and recorder.store is not None,
                           time_limit=_time_limit(cfg, timeout, rounds))
    initial = initial_params(cfg, pre)
    setup = with_architecture(setup, initial)  # a factory model: institutions check theirs
    start = recorder.resume() if recorder is not None and resume else None
    strategy = replace(build_strategy(cfg, setup, keys, len(admission.train_rows)),
                       admission=admission)
    history = train(strategy, transport, initial, settings, clock or build_clock(cfg), bus,
                    start=start,
                    on_commit=recorder.checkpoint if recorder is not None else None)
    return SessionResult(history, pre, setup, dict(admission.train_rows))


def _time_limit(cfg: RunConfig, timeout: float | None, rounds: int) -> float | None:
    """An asynchronous deployment stops after round_timeout × rounds seconds."""
    if cfg.run.mode != "async" or timeout is None:
        return None
    return timeout * rounds
