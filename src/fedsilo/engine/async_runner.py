"""Asynchronous drivers of an `AsyncStrategy`: the same strategy object under a virtual
clock (simulation: deterministic, simulated seconds) or the wall clock (deployment: real
institutions over any ServerTransport, where a slow one never blocks the others).

Each commit publishes one RoundEvent whose `round` is the new model version; its metrics
carry the simulated time (`clock.time`) and the staleness of the updates it applied.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from fedsilo.algorithms.admission import Admission
from fedsilo.algorithms.asynchronous import AsyncState, AsyncStrategy
from fedsilo.algorithms.base import Rejection, ServerState, judge_evaluation, witness
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.core.params import Params, digest
from fedsilo.engine.clock import VirtualClock, examples_processed
from fedsilo.engine.events import EventBus, RoundEvent
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.transport.base import ServerTransport
from fedsilo.transport.inprocess import InProcessTransport

log = logging.getLogger(__name__)

Evaluation = tuple[dict[str, dict[str, float]], list[float]]
EvaluateFn = Callable[[Params, int], Evaluation]


@dataclass(frozen=True)
class AsyncSettings:
    run_id: str
    seed: int
    versions: int                 # stop after this many commits
    evaluate_every: int = 1       # evaluate every N versions (and the last)
    barrier: bool = False         # True: institutions wait for the commit (synchronous FedAvg)
    audit: bool = False           # SHA-256 of every update received and of every model
    task_timeout: float | None = None  # deployment: re-task an institution silent this long
    timeout: float | None = None  # deployment: give up after this many seconds


@dataclass
class AsyncHistory:
    events: list[RoundEvent]
    state: AsyncState | ServerState  # ServerState: secure FedBuff (engine/secure_buffer.py)
    virtual_time: float = 0.0

    @property
    def params(self) -> Params:
        return self.state.params


class _Run:
    """What both drivers share: state, buffer, per-institution task counts, events."""

    def __init__(self, strategy: AsyncStrategy, initial: Params, settings: AsyncSettings,
                 bus: EventBus) -> None:
        self.strategy, self.settings, self.bus = strategy, settings, bus
        self.state = strategy.init(initial)
        self.buffer = strategy.open(self.state)
        self.counts: dict[str, int] = defaultdict(int)
        self.events: list[RoundEvent] = []
        bus.subscribe(self.events.append)
        self.started = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.state.version >= self.settings.versions

    def next_task(self, client: str) -> Task:
        self.counts[client] += 1
        return self.strategy.task(self.state, client, self.counts[client], self.settings.run_id,
                                  self.settings.seed)

    def fold(self, reply: Reply) -> tuple[Rejection | None, bool]:
        """Accept one reply. Returns (rejection or None, whether the buffer is now full)."""
        fingerprint = reply.fingerprint() if self.settings.audit else ""
        rejection = self.strategy.accept(self.state, self.buffer, reply)
        if self.settings.audit and rejection is None:
            key = reply.client_id if reply.client_id not in self.buffer.digests else (
                f"{reply.client_id}#{len(self.buffer.received)}")  # twice in one buffer
            witness(self.buffer, key, reply, fingerprint)
        if rejection is not None:
            log.warning("version %d: rejected %s: [%s] %s", self.state.version,
                        rejection.client_id, rejection.code, rejection.reason)
        return rejection, self.strategy.ready(self.buffer)

    def commit(self, now: float, evaluate: EvaluateFn) -> None:
        buffer = self.buffer
        self.state, metrics = self.strategy.commit(self.state, buffer)
        self.buffer = self.strategy.open(self.state)
        v = self.state.version
        evaluation: dict[str, dict[str, float]] = {}
        sizes: list[float] = []
        if v % self.settings.evaluate_every == 0 or v == self.settings.versions:
            evaluation, sizes = evaluate(self.state.params, v)
        self.bus.publish(RoundEvent(
            round=v, version=v, participants=tuple(buffer.received),
            rejected={r.client_id: f"[{r.code}] {r.reason}" for r in buffer.rejected},
            metrics={**metrics, "clock": {"time": now}}, evaluation=evaluation,
            federated=weighted_mean(list(evaluation.values()), sizes),
            seconds=time.perf_counter() - self.started, digests=dict(buffer.digests),
            model_digest=digest(self.state.params) if self.settings.audit else "",
            signed=dict(buffer.signed)))


def _eval_tasks(run: _Run, params: Params, version: int, clients: list[str]) -> list[Task]:
    cfg = {**run.strategy.client_config, "final": version == run.settings.versions}
    return [Task(run.settings.run_id, version, version, TaskKind.EVALUATE, c, params, cfg)
            for c in sorted(clients)]


def collect_evaluation(replies: list[Reply], admission: Admission) -> Evaluation:
    """The evaluations that count in the federated metric; the others are logged, with why."""
    ok = []
    for r in sorted(replies, key=lambda r: r.client_id):
        rejection = judge_evaluation(admission, r)
        if rejection is None:
            ok.append(r)
        else:
            log.warning("version %d: evaluation from %s not counted: [%s] %s", r.round,
                        r.client_id, rejection.code, rejection.reason)
    return {r.client_id: dict(r.metrics) for r in ok}, [float(r.num_examples) for r in ok]


def run_async_virtual(strategy: AsyncStrategy, transport: InProcessTransport, initial: Params,
                      settings: AsyncSettings, clock: VirtualClock,
                      bus: EventBus | None = None) -> AsyncHistory:
    """Simulate asynchronous training: each task runs at once on the model it was given and
    its reply arrives at `now + clock.duration(...)`. Replies arriving at the same simulated
    instant are folded in together, then their institutions get new tasks (after the
    commit, with `settings.barrier`)."""
    run = _Run(strategy, initial, settings, bus or EventBus())
    clients = transport.clients()
    heap: list[tuple[float, int, str, Reply]] = []
    seq = 0

    def launch(client: str, now: float) -> None:
        nonlocal seq
        task = run.next_task(client)
        reply = transport.call(task)
        done = now + clock.duration(client, examples_processed(task.config, reply.num_examples),
                                    run.counts[client])
        heapq.heappush(heap, (done, seq, client, reply))
        seq += 1

    def evaluate(params: Params, version: int) -> Evaluation:
        return collect_evaluation([transport.call(t)
                              for t in _eval_tasks(run, params, version, clients)],
                             strategy.admission)

    for client in clients:
        launch(client, 0.0)
    now, waiting = 0.0, list[str]()
    while heap and not run.done:
        now = heap[0][0]
        arrived = []
        while heap and heap[0][0] == now:
            arrived.append(heapq.heappop(heap)[2:])
        ready_now: list[str] = []
        for client, reply in arrived:
            rejection, full = run.fold(reply)
            (ready_now if rejection is not None or not settings.barrier else waiting).append(
                client)
            if full:
                run.commit(now, evaluate)
                if settings.barrier:
                    ready_now, waiting = ready_now + waiting, []
                if run.done:
                    break
        for client in ([] if run.done else ready_now):
            launch(client, now)
    return AsyncHistory(run.events, run.state, now)


def run_async_live(strategy: AsyncStrategy, transport: ServerTransport, initial: Params,
                   settings: AsyncSettings, bus: EventBus | None = None) -> AsyncHistory:
    """Asynchronous training over a real transport: every institution always has a task; a
    reply is folded in as it arrives and its institution gets the newest model at once.
    Institutions that connect later join; a slow one never blocks the others; a task not
    answered within `settings.task_timeout` is withdrawn and its institution re-tasked (a
    restarted process picks the new task up; a late reply is refused)."""
    run = _Run(strategy, initial, settings, bus or EventBus())
    open_tasks: dict[str, Task] = {}
    sent: dict[str, float] = {}

    def give(clients: list[str]) -> None:
        tasks = [run.next_task(c) for c in clients]
        open_tasks.update({t.task_id: t for t in tasks})
        sent.update({t.task_id: time.monotonic() for t in tasks})
        transport.dispatch(tasks)

    def idle() -> list[str]:
        busy = {t.client_id for t in open_tasks.values()}
        return [c for c in transport.clients() if c not in busy]  # incl. newcomers

    start = time.monotonic()
    give(transport.clients())
    while not run.done:
        if settings.timeout is not None and time.monotonic() - start > settings.timeout:
            log.warning("async run stopped after %.0f s at version %d", settings.timeout,
                        run.state.version)
            break
        reply = transport.next_reply(0.5)
        _withdraw_late(transport, open_tasks, sent, settings.task_timeout)
        if reply is None:
            give(idle())
            continue
        sent.pop(reply.task_id, None)
        if open_tasks.pop(reply.task_id, None) is None:
            transport.acknowledge(reply, Rejection(reply.client_id, "wrong_round",
                                                   "no such task open"))
            continue
        rejection, full = run.fold(reply)
        transport.acknowledge(reply, rejection)
        if full:
            run.commit(time.monotonic() - start, lambda params, version: ({}, []))
        if not run.done:
            give(idle())
    _final_evaluation(run, transport, open_tasks, settings.task_timeout)
    return AsyncHistory(run.events, run.state, time.monotonic() - start)


def _withdraw_late(transport: ServerTransport, open_tasks: dict[str, Task],
                   sent: dict[str, float], limit: float | None) -> None:
    if limit is None:
        return
    now = time.monotonic()
    late = [task_id for task_id, t in sent.items() if now - t > limit]
    if not late:
        return
    transport.withdraw(late)
    for task_id in late:
        task = open_tasks.pop(task_id)
        sent.pop(task_id)
        log.warning("version %s: no reply from %s within %.0f s: task withdrawn, re-tasking",
                    task.model_version, task.client_id, limit)


def _final_evaluation(run: _Run, transport: ServerTransport, open_tasks: dict[str, Task],
                      timeout: float | None) -> None:
    """Score the final model at every institution; fit replies still in flight are refused
    (training is over) so that no update is half-applied."""
    tasks = _eval_tasks(run, run.state.params, run.state.version, transport.clients())
    transport.dispatch(tasks)
    wanted = {t.task_id for t in tasks}
    replies = []
    for reply in transport.poll(timeout):
        if reply.task_id in wanted:
            transport.acknowledge(reply, None)
            replies.append(reply)
        else:
            open_tasks.pop(reply.task_id, None)
            transport.acknowledge(reply, Rejection(reply.client_id, "run_finished",
                                                   "training is over; update not applied"))
    if run.events:
        evaluation, sizes = collect_evaluation(replies, run.strategy.admission)
        last = run.events[-1]
        run.events[-1] = dataclasses.replace(
            last, evaluation=evaluation,
            federated=weighted_mean(list(evaluation.values()), sizes))
