"""The synchronous round loop: configure, dispatch, accept as replies stream in, commit,
evaluate, publish. Transport-agnostic: simulation and deployment drive the same loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedsilo.aggregation.base import find_staged
from fedsilo.algorithms.base import (
    OpenRound,
    ServerState,
    Strategy,
    judge_evaluation,
    witness,
)
from fedsilo.core.messages import Task
from fedsilo.core.params import Params, digest
from fedsilo.engine.events import EventBus, RoundEvent
from fedsilo.engine.stages import after_collection, before_collection
from fedsilo.errors import AggregationError
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.transport.base import ServerTransport

log = logging.getLogger(__name__)


@dataclass
class RunHistory:
    """Every round's event, and the final server state."""

    events: list[RoundEvent] = field(default_factory=list)
    state: ServerState | None = None

    @property
    def params(self) -> Params:
        assert self.state is not None, "the run has not committed any round"
        return self.state.params


@dataclass(frozen=True)
class RunSettings:
    run_id: str
    seed: int
    rounds: int
    evaluate_every: int = 1
    round_timeout: float | None = None
    audit: bool = False  # SHA-256 of every update received and of every global model


def run_sync(strategy: Strategy, transport: ServerTransport, initial: Params,
             settings: RunSettings, bus: EventBus | None = None,
             start: tuple[int, ServerState] | None = None,
             on_commit: Callable[[int, ServerState], None] | None = None) -> RunHistory:
    """Run `settings.rounds` synchronous rounds from `initial` parameters, or continue after
    round r from a saved state (`start` = (r, state)). `on_commit(round, state)` runs after
    every round (checkpoints)."""
    bus = bus or EventBus()
    done, state = start if start is not None else (0, strategy.init(initial))
    history = RunHistory(state=state)
    bus.subscribe(history.events.append)
    for rnd in range(done + 1, settings.rounds + 1):
        state = _one_round(strategy, transport, state, rnd, settings, bus)
        history.state = state
        if on_commit is not None:
            on_commit(rnd, state)
    return history


def _one_round(strategy: Strategy, transport: ServerTransport, state: ServerState, rnd: int,
               settings: RunSettings, bus: EventBus) -> ServerState:
    start = time.perf_counter()
    tasks, open_round = strategy.configure(state, transport.clients(), rnd, settings.run_id,
                                           settings.seed)
    staged = find_staged(strategy.aggregator)
    try:
        if staged is not None:
            tasks = before_collection(staged, transport, tasks, open_round, settings.seed,
                                      settings.round_timeout, strategy.client_config)
        _collect(strategy, transport, tasks, open_round, settings.round_timeout, settings.audit)
        if staged is not None:
            after_collection(staged, transport, open_round, settings.run_id,
                             settings.round_timeout, strategy.client_config)
        state, metrics = strategy.commit(state, open_round)
    except AggregationError as e:  # too few valid replies or survivors: keep the model
        log.warning("round %d aborted, model unchanged: %s", rnd, e)
        metrics = {"aborted": str(e)}
    evaluation: dict[str, dict[str, float]] = {}
    sizes: list[float] = []
    evaluate_now = rnd % settings.evaluate_every == 0 or rnd == settings.rounds
    if evaluate_now and "aborted" not in metrics:
        evaluation, sizes, dropped = _evaluate(strategy, transport, state, rnd,
                                               settings.run_id, settings.round_timeout,
                                               rnd == settings.rounds)
        if dropped:  # recorded with the round (the run store keeps its metrics)
            metrics = {**metrics, "evaluation": {"dropped": dropped}}
    bus.publish(RoundEvent(
        round=rnd, version=state.version, participants=tuple(open_round.received),
        rejected={r.client_id: f"[{r.code}] {r.reason}" for r in open_round.rejected},
        metrics=metrics, evaluation=evaluation,
        federated=weighted_mean(list(evaluation.values()), sizes),
        seconds=time.perf_counter() - start, digests=dict(open_round.digests),
        model_digest=digest(state.params) if settings.audit else "",
        signed=dict(open_round.signed)))
    return state


def _collect(strategy: Strategy, transport: ServerTransport, tasks: list[Task],
             open_round: OpenRound, timeout: float | None, audit: bool) -> None:
    """Dispatch the fit tasks and fold each reply in as it arrives."""
    transport.dispatch(tasks)
    for reply in transport.poll(timeout):
        fingerprint = reply.fingerprint() if audit else ""
        rejection = strategy.accept(open_round, reply)  # a layer may reuse the arrays after
        if audit and rejection is None:
            witness(open_round, reply.client_id, reply, fingerprint)
        transport.acknowledge(reply, rejection)
        if rejection is not None:
            log.warning("round %d: rejected %s: [%s] %s", open_round.round,
                        rejection.client_id, rejection.code, rejection.reason)
        if strategy.ready(open_round):
            break


def _evaluate(strategy: Strategy, transport: ServerTransport, state: ServerState, rnd: int,
              run_id: str, timeout: float | None, final: bool,
              ) -> tuple[dict[str, dict[str, float]], list[float], dict[str, str]]:
    """Every institution's metrics of the model, their test-row counts (the weights of the
    federated metric), and the replies dropped for breaking an admission rule (why)."""
    transport.dispatch(strategy.evaluate_tasks(state, transport.clients(), rnd, run_id, final))
    results: dict[str, dict[str, float]] = {}
    sizes: dict[str, float] = {}
    dropped: dict[str, str] = {}
    for reply in transport.poll(timeout):
        rejection = judge_evaluation(strategy.admission, reply)
        transport.acknowledge(reply, rejection)
        if rejection is None:
            results[reply.client_id] = dict(reply.metrics)
            sizes[reply.client_id] = float(reply.num_examples)
        elif reply.ok:
            dropped[reply.client_id] = f"[{rejection.code}] {rejection.reason}"
            log.warning("round %d: evaluation from %s dropped: %s", rnd, reply.client_id,
                        dropped[reply.client_id])
        else:
            log.warning("round %d: evaluation failed at %s: %s", rnd, reply.client_id,
                        reply.error)
    ordered = sorted(results)
    return {c: results[c] for c in ordered}, [sizes[c] for c in ordered], dropped
