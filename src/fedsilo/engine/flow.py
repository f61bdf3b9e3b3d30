"""The round flow, written once and without I/O: a generator that yields what to send (tasks,
acknowledgements) and receives what happened (replies that arrived together, tasks whose
deadline passed, the institutions available, the clock's time). Drivers (engine/drivers.py)
carry these over a transport under a virtual or a wall clock.

The strategy's commit rule (algorithms/commit.py) shapes the flow:
- whole cohort: rounds one after another — the layers' stages before the fit tasks (SecAgg+
  key exchange), the fit tasks, the stages after (unmasking), commit, evaluation;
- K buffered without a secure sum (FedBuff) or every update (FedAsync): every idle institution
  trains on the newest model; replies fold into one open buffer; every K accepted, commit;
- K buffered over a secure sum: idle institutions form groups of K, each group a cohort round
  of its own (stages included) on the model of its start; groups overlap, and each commits
  when its members are in, weighed by its staleness.
Each commit publishes one RoundEvent (in commit order, once its evaluation is in).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedsilo.aggregation.base import find_staged
from fedsilo.algorithms.base import (
    Collection,
    ServerState,
    Strategy,
    judge_evaluation,
)
from fedsilo.core.messages import Rejection, Reply, StageTask, Task, TaskKind
from fedsilo.core.params import Params, digest
from fedsilo.core.rng import derive_seed
from fedsilo.engine.events import EventBus, RoundEvent
from fedsilo.errors import (
    AggregationError,
    ConfigError,
    ProtocolError,
    UnknownClient,
    WrongRound,
)
from fedsilo.evaluation.metrics import weighted_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """Args:
        rounds: commits to make (synchronous rounds, or model versions).
        evaluate_every: evaluate every N commits (and the last).
        round_timeout: seconds a task may stay unanswered (wall clock; None: no limit).
        audit: SHA-256 of every update received and of every global model.
        time_limit: wall-clock seconds after which training stops (None: no limit).
    """

    run_id: str
    seed: int
    rounds: int
    evaluate_every: int = 1
    round_timeout: float | None = None
    audit: bool = False
    time_limit: float | None = None


@dataclass(frozen=True)
class Event:
    """What the driver tells the flow."""

    now: float
    clients: tuple[str, ...]
    replies: tuple[Reply, ...] = ()  # arrived together (one instant of the clock)
    expired: tuple[str, ...] = ()    # task ids whose deadline passed (withdrawn)
    stop: bool = False               # the run's time limit passed


@dataclass
class Outbox:
    """What the flow asks the driver to do: acknowledge replies, then send tasks (`since`:
    tasks sent again after a resumption, with the time they were first sent)."""

    tasks: list[Task] = field(default_factory=list)
    acks: list[tuple[Reply, Rejection | None]] = field(default_factory=list)
    since: dict[str, float] = field(default_factory=dict)
    last: bool = False  # the run is over once these are sent (the driver sends no more)


@dataclass
class RunHistory:
    """Every commit's event, the final server state and the clock's time at the end."""

    events: list[RoundEvent] = field(default_factory=list)
    state: ServerState | None = None
    virtual_time: float = 0.0

    @property
    def params(self) -> Params:
        assert self.state is not None, "the run has not committed any round"
        return self.state.params


Flow = Generator[Outbox, Event, RunHistory]
OnCommit = Callable[[int, ServerState], None]


@dataclass
class _Unpublished:
    """A commit's event, waiting for its evaluation: the tasks still out, the metrics in."""

    event: RoundEvent
    pending: set[str] = field(default_factory=set)
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


class _Stages:
    """A cohort round's extra exchanges (a secure sum's key exchange before the fit tasks,
    unmasking after): the layer says what to ask, checks each answer and folds in those that
    pass; an institution whose answer is an error or fails the check is out of the rest of
    the round (recorded, and told why)."""

    def __init__(self, staged: Any, coll: Collection, run_id: str,
                 strategy: Strategy) -> None:
        self.staged, self.coll, self.run_id = staged, coll, run_id
        self.config, self.setup = strategy.client_config, strategy.setup
        self.stage = ""
        self.asked = False  # a stage was asked and awaits its verdict
        self.tasks: dict[str, Task] = {}
        self.answers: dict[str, Any] = {}

    def ask(self, stage: str, alive: list[str]) -> list[Task]:
        self.stage, self.answers, self.asked = stage, {}, True
        requests = self.staged.stage_requests(stage, self.coll.accumulator, alive)
        self.tasks = {cid: Task(self.run_id, self.coll.round, self.coll.version,
                                TaskKind.STAGE, cid, {}, self.config,
                                body=StageTask(stage, payload), setup=self.setup)
                      for cid, payload in sorted(requests.items())}
        return list(self.tasks.values())

    def answer(self, reply: Reply) -> Rejection | None:
        if reply.client_id in self.answers:
            return Rejection(reply.client_id, ProtocolError.code,
                             f"not an answer to {self.stage} now")
        if reply.error is not None:
            rejection = Rejection.of(reply)
        else:
            try:
                self.answers[reply.client_id] = self.staged.stage_check(
                    self.stage, self.coll.accumulator, reply.client_id,
                    reply.payload.get("stage"))
                return None
            except ProtocolError as e:
                rejection = Rejection(reply.client_id, e.code, f"stage {self.stage}: {e}")
        log.warning("round %d, stage %s: %s is out: [%s] %s", self.coll.round, self.stage,
                    rejection.client_id, rejection.code, rejection.reason)
        self.coll.reject(rejection)
        return rejection

    def verdict(self) -> list[str]:
        """Who is still in after this stage (the layer's verdict on the passing answers)."""
        self.asked = False
        return list(self.staged.stage_collect(self.stage, self.coll.accumulator, self.answers))


class _CohortRound:
    """One cohort's round: pre-stages, fit tasks, post-stages. `step` returns the next tasks
    to send; `collected` once everything is in (or `aborted` says why it cannot go on)."""

    def __init__(self, flow: _Flow, state: ServerState, available: list[str],
                 number: int) -> None:
        s = flow.strategy
        self.flow, self.state = flow, state
        self.fit, self.coll = s.configure(state, available, number, flow.settings.run_id,
                                          flow.settings.seed)
        self.members = list(available)
        self.staged = find_staged(s.aggregator)
        self.stages = (None if self.staged is None else
                       _Stages(self.staged, self.coll, flow.settings.run_id, s))
        self.plan: list[str] = list(self.staged.pre_stages) if self.staged is not None else []
        self.post = list(self.staged.post_stages) if self.staged is not None else []
        self.phase = "pre"
        self.outstanding: set[str] = set()
        self.collected = False
        self.aborted: str | None = None
        self.started = time.perf_counter()

    def start(self) -> list[Task]:
        if self.staged is not None:
            alive = [t.client_id for t in self.fit]
            self.staged.begin(self.coll.accumulator, self.coll.round,
                              derive_seed(self.flow.settings.seed, self.coll.round,
                                          "secure-aggregation"), alive)
            self.alive = alive
        return self._advance()

    def _advance(self) -> list[Task]:
        """Move on once nothing is outstanding: the next stage, the fit tasks, or done."""
        try:
            while not self.outstanding:
                if self.stages is not None and self.stages.asked:
                    self.alive = self.stages.verdict()
                if self.phase == "pre" and self.plan:
                    return self._send(self.stages.ask(self.plan.pop(0), self.alive))  # type: ignore[union-attr]
                if self.phase == "pre":
                    self.phase = "fit"
                    return self._send(self._fit_tasks())
                if self.phase == "fit":
                    self.phase, self.alive = "post", sorted(self.coll.received)
                if self.phase == "post" and self.post:
                    return self._send(self.stages.ask(self.post.pop(0), self.alive))  # type: ignore[union-attr]
                self.collected = True
                return []
        except AggregationError as e:  # too few survivors of a stage: the round is aborted
            self.aborted, self.collected = str(e), True
        return []

    def _fit_tasks(self) -> list[Task]:
        if self.staged is None:
            return self.fit
        self.coll.cohort = frozenset(self.alive)
        acc = self.coll.accumulator
        return [dataclasses.replace(t, layer_config={**t.layer_config,
                                                     **self.staged.fit_config(acc, t.client_id)})
                for t in self.fit if t.client_id in self.coll.cohort]

    def _send(self, tasks: list[Task]) -> list[Task]:
        self.outstanding = {t.task_id for t in tasks}
        if not tasks:
            return self._advance()
        return tasks

    def reply(self, reply: Reply) -> tuple[Rejection | None, list[Task]]:
        self.outstanding.discard(reply.task_id)
        if self.phase == "fit":
            rejection = self.flow.fold(self.state, self.coll, reply)
        else:
            assert self.stages is not None
            rejection = self.stages.answer(reply)
        return rejection, self._advance()

    def expire(self, task_id: str) -> list[Task]:
        self.outstanding.discard(task_id)
        return self._advance()


class _Flow:
    """The flow's state; `run` is the generator."""

    def __init__(self, strategy: Strategy, settings: RunSettings, state: ServerState,
                 done: int, bus: EventBus, on_commit: OnCommit | None) -> None:
        self.strategy, self.settings, self.bus, self.on_commit = strategy, settings, bus, on_commit
        self.state, self.done = state, done
        self.history = RunHistory(state=state)
        bus.subscribe(self.history.events.append)
        self.rule = strategy.rule
        self.groups = self.rule.asynchronous and find_staged(strategy.aggregator) is not None
        self.owner: dict[str, Any] = {}  # open task id -> what it belongs to
        self.addressee: dict[str, str] = {}  # open task id -> the institution it went to
        self.event_round = done  # asynchronous events are numbered by commit
        self.out = Outbox()
        self.unpublished: list[_Unpublished] = []  # commits whose evaluation is not all in
        self.started = time.perf_counter()
        self.now = 0.0
        self.clients: tuple[str, ...] = ()
        self.finished = False

    # -- the generator ---------------------------------------------------------------------

    def run(self) -> Flow:
        event = yield Outbox()
        self._see(event)
        if not self.rule.asynchronous:
            yield from self._rounds()
        else:
            yield from self._asynchronous(event)
        while self.unpublished:  # the last evaluations
            yield from self._wait()
        self.history.state, self.history.virtual_time = self.state, self.now
        self.out.last = True  # the last acknowledgements still go out
        yield self.out
        return self.history

    def _see(self, event: Event) -> None:
        self.now, self.clients = event.now, event.clients

    def _wait(self) -> Generator[Outbox, Event, Event]:
        """Send what is queued; route what comes back."""
        out, self.out = self.out, Outbox()
        event = yield out
        self._see(event)
        for reply in event.replies:
            self._route(reply)
        for task_id in event.expired:
            self._expire(task_id)
        if event.stop and not self.finished:
            log.warning("run stopped after %s s at version %d", self.settings.time_limit,
                        self.state.version)
            self.finished = True
        self._publish_ready()
        return event

    def _route(self, reply: Reply) -> None:
        owner = self.owner.get(reply.task_id)
        if owner is not None and self.addressee[reply.task_id] != reply.client_id:
            self._ack(reply, Rejection(reply.client_id, UnknownClient.code,
                                       "a reply to a task sent to another institution"))
            return  # the task stays open for its own institution
        self.owner.pop(reply.task_id, None)
        self.addressee.pop(reply.task_id, None)
        if owner is None:
            self._ack(reply, Rejection(reply.client_id, "wrong_round", "no such task open"))
        elif isinstance(owner, _CohortRound):
            fitting = owner.phase == "fit"  # a fit reply is acknowledged when folded
            rejection, more = owner.reply(reply)
            if not fitting:
                self._ack(reply, rejection)
            self._send(more, owner)
        elif owner == "fit":
            self._buffered(reply)
        else:
            self._evaluated(owner, reply)

    def _expire(self, task_id: str) -> None:
        owner = self.owner.pop(task_id, None)
        self.addressee.pop(task_id, None)
        if isinstance(owner, _CohortRound):
            self._send(owner.expire(task_id), owner)
        elif owner == "fit":
            task, _ = self.open_fits.pop(task_id)
            log.warning("no reply from %s within %s s: task withdrawn, re-tasking",
                        task.client_id, self.settings.round_timeout)
            self.ready.append(task.client_id)
        elif owner is not None:
            owner.pending.discard(task_id)

    def _send(self, tasks: list[Task], owner: Any) -> None:
        for task in tasks:
            self.owner[task.task_id] = owner
            self.addressee[task.task_id] = task.client_id
        self.out.tasks.extend(tasks)

    def _ack(self, reply: Reply, rejection: Rejection | None) -> None:
        self.out.acks.append((reply, rejection))

    # -- folding a fit reply ------------------------------------------------------------------

    def fold(self, state: ServerState, coll: Collection, reply: Reply) -> Rejection | None:
        """Accept a fit reply into `coll` (audit: its digest and signature), acknowledged."""
        fingerprint = reply.fingerprint() if self.settings.audit else ""  # before a layer reuses it
        rejection = self.strategy.accept(state, coll, reply)
        if self.settings.audit and rejection is None:
            coll.witness(reply, fingerprint)
        self._ack(reply, rejection)
        if rejection is not None:
            log.warning("round %d: rejected %s: [%s] %s", coll.round, rejection.client_id,
                        rejection.code, rejection.reason)
        return rejection

    # -- whole cohort ------------------------------------------------------------------------

    def _rounds(self) -> Generator[Outbox, Event, None]:
        for number in range(self.done + 1, self.settings.rounds + 1):
            rnd = _CohortRound(self, self.state, list(self.clients), number)
            self._send(rnd.start(), rnd)
            while not rnd.collected:
                yield from self._wait()
            self._commit(rnd.coll, number, rnd.aborted, rnd.started)
            while self.unpublished:
                yield from self._wait()
            if self.on_commit is not None:
                self.on_commit(number, self.state)

    # -- asynchronous ------------------------------------------------------------------------

    def _asynchronous(self, first: Event) -> Generator[Outbox, Event, None]:
        """Buffered commits (FedBuff, FedAsync) or overlapping secure groups."""
        self.known: set[str] = set()
        self.ready: list[str] = []
        self.waiting: list[str] = []
        self.open_fits: dict[str, tuple[Task, float]] = {}  # buffered tasks, in sending order
        self.counts: dict[str, int] = {}
        self.buffer: Collection | None = self.strategy.open(self.state, len(first.clients))
        self.group_number = 0
        self.in_flight: list[_CohortRound] = []
        if self.state.flow:
            self._resume(self.state.flow)
        while not self._over():
            self._newcomers()
            self._launch()
            self._check_buffer_can_fill()
            yield from self._wait()
            if self.groups:
                self._commit_groups()

    def _over(self) -> bool:
        return self.finished or self.state.version >= self.settings.rounds

    def _newcomers(self) -> None:
        for client in self.clients:
            if client not in self.known:
                self.known.add(client)
                self.ready.append(client)

    def _launch(self) -> None:
        """Tasks for the idle: one each on the newest model, or (groups) cohorts of K."""
        if self._over():
            return
        k = self.rule.buffer or 1
        if (self.groups or self.rule.barrier) and k > len(self.known):  # K distinct needed
            raise ConfigError(f"fedbuff: buffer_size {k} > {len(self.known)} institutions")
        if self.groups:
            while len(self.ready) >= k:
                members, self.ready = self.ready[:k], self.ready[k:]
                self.group_number += 1
                rnd = _CohortRound(self, self.state, members, self.group_number)
                rnd.coll.population = len(self.known)  # SCAFFOLD's, FedDyn's share: K of N
                self.in_flight.append(rnd)
                self._send(rnd.start(), rnd)
            return
        for client in self.ready:
            self.counts[client] = self.counts.get(client, 0) + 1
            task = self.strategy.fit_task(self.state, client, self.counts[client],
                                          self.settings.run_id, self.settings.seed,
                                          layer_round=self.state.version)
            self.open_fits[task.task_id] = (task, self.now)
            self._send([task], "fit")
        self.ready = []

    def _check_buffer_can_fill(self) -> None:
        """Under the barrier, a buffer that no task in flight can fill never will.

        Raises:
            AggregationError: every institution waits and the buffer is short.
        """
        if not self.rule.barrier or self.groups or self.open_fits or self.ready:
            return
        assert self.buffer is not None
        raise AggregationError(
            f"the buffer of {self.rule.buffer} cannot fill: {len(self.buffer.received)} "
            f"update(s) accepted, every other institution's was refused "
            f"({', '.join(sorted({r.client_id for r in self.buffer.rejected}))})")

    def _buffered(self, reply: Reply) -> None:
        """A reply to a buffered task: fold it in; commit when the buffer is full."""
        task, _ = self.open_fits.pop(reply.task_id)
        if self._over() or self.buffer is None:
            self._ack(reply, Rejection(reply.client_id, "run_finished",
                                       "training is over; update not applied"))
            return
        if reply.model_version != task.model_version:  # its staleness is the task's, not a claim
            rejection: Rejection | None = Rejection(
                reply.client_id, WrongRound.code, f"the reply claims model version "
                f"{reply.model_version}; its task carried version {task.model_version}")
            self.buffer.rejected.append(rejection)  # type: ignore[arg-type]
            self._ack(reply, rejection)
        else:
            rejection = self.fold(self.state, self.buffer, reply)
        # the barrier: whoever answered waits for the commit (accepted or not), so a refused
        # institution cannot be re-tasked in a loop and each commit holds distinct ones
        (self.waiting if self.rule.barrier else self.ready).append(reply.client_id)
        if self.strategy.ready(self.buffer):
            full, self.buffer = self.buffer, None
            self.ready, self.waiting = self.ready + self.waiting, []
            self._commit(full, None, None, self.started)
            self.buffer = self.strategy.open(self.state, len(self.known))

    # -- resuming an asynchronous run ----------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        """What an asynchronous run needs to go on exactly from here: the clock, every
        institution's task count and place in line, and the tasks in flight (sent again on
        resumption, as if first sent when they were: a simulation reruns them to the same
        replies). Taken between commits, when no update waits in a buffer."""
        if self.groups:  # a group in flight is started again (its keys died with the server)
            return {"now": self.now, "group": self.group_number}
        params: dict[str, Params] = {}
        open_tasks = []
        for task, sent in self.open_fits.values():
            params.setdefault(str(task.model_version), dict(task.params))
            open_tasks.append({"client": task.client_id, "round": task.round,
                               "version": task.model_version, "config": dict(task.config),
                               "layer_config": dict(task.layer_config), "sent": sent})
        return {"now": self.now, "counts": dict(self.counts), "known": sorted(self.known),
                "ready": list(self.ready), "waiting": list(self.waiting),
                "open": open_tasks, "params": params}

    def _resume(self, saved: Mapping[str, Any]) -> None:
        self.now = float(saved["now"])
        self.group_number = int(saved.get("group", 0))
        if self.groups:
            return
        self.counts = {str(c): int(n) for c, n in saved["counts"].items()}
        self.known = set(saved["known"])
        self.ready, self.waiting = list(saved["ready"]), list(saved["waiting"])
        for t in saved["open"]:
            task = dataclasses.replace(
                self.strategy.fit_task(self.state, t["client"], int(t["round"]),
                                       self.settings.run_id, self.settings.seed),
                model_version=int(t["version"]), params=saved["params"][str(t["version"])],
                config=t["config"], layer_config=t["layer_config"])
            self.open_fits[task.task_id] = (task, float(t["sent"]))
            self.out.since[task.task_id] = float(t["sent"])
            self._send([task], "fit")
        self.state = dataclasses.replace(self.state, flow={})

    def _checkpoint(self) -> None:
        """After an asynchronous commit's event: a resumption point, when one can be taken."""
        if self.on_commit is None or self.unpublished:
            return
        if self._over():  # the last commit: nothing in flight matters any more
            self.on_commit(self.event_round, self.state)
        elif self.groups or self.buffer is None or not self.buffer.received:
            self.on_commit(self.event_round,
                           dataclasses.replace(self.state, flow=self._snapshot()))

    def _commit_groups(self) -> None:
        """Commit every group whose members are in (in the order the groups started)."""
        for rnd in [r for r in self.in_flight if r.collected]:
            self.in_flight.remove(rnd)
            if not self._over():
                self._commit(rnd.coll, None, rnd.aborted, self.started)
            self.ready.extend(m for m in rnd.members if m not in self.ready)

    # -- commit, evaluation, events ----------------------------------------------------------

    def _commit(self, coll: Collection, number: int | None, aborted: str | None,
                started: float) -> None:
        """Apply a collection (a round's, a buffer's or a group's); evaluate when due; queue
        its event. `number`: the round (synchronous); else the event takes the version."""
        metrics: dict[str, Any]
        if aborted is None:
            try:
                self.state, metrics = self.strategy.commit(self.state, coll)
            except AggregationError as e:  # too few valid replies or survivors: keep the model
                if coll.cohort is None:  # a buffer that cannot commit never will: stop
                    raise
                aborted = str(e)
        if aborted is not None:
            log.warning("round %d aborted, model unchanged: %s", coll.round, aborted)
            metrics = {"aborted": aborted}
        if self.rule.asynchronous:
            metrics = {**metrics, "clock": {"time": self.now}}
        n = number if number is not None else self.state.version  # evaluation schedule
        if number is None:
            self.event_round += 1
        event = RoundEvent(
            round=number if number is not None else self.event_round,
            version=self.state.version, participants=tuple(coll.received),
            rejected={r.client_id: f"[{r.code}] {r.reason}" for r in coll.rejected},
            metrics=metrics, seconds=time.perf_counter() - started,
            digests=dict(coll.digests),
            model_digest=digest(self.state.params) if self.settings.audit else "",
            signed=dict(coll.signed))
        record = _Unpublished(event)
        due = n % self.settings.evaluate_every == 0 or n == self.settings.rounds
        if due and aborted is None:
            tasks = self.strategy.evaluate_tasks(self.state, self.clients, n,
                                                 self.settings.run_id,
                                                 n == self.settings.rounds)
            record.pending.update(t.task_id for t in tasks)
            self._send(tasks, record)
        self.unpublished.append(record)
        self._publish_ready()

    def _evaluated(self, record: _Unpublished, reply: Reply) -> None:
        record.pending.discard(reply.task_id)
        rejection = judge_evaluation(self.strategy.admission, reply)
        self._ack(reply, rejection)
        if rejection is None:
            record.results[reply.client_id] = dict(reply.metrics)
            record.sizes[reply.client_id] = float(reply.num_examples)
        elif reply.ok:
            record.dropped[reply.client_id] = f"[{rejection.code}] {rejection.reason}"
            log.warning("evaluation from %s dropped: %s", reply.client_id,
                        record.dropped[reply.client_id])
        else:
            log.warning("evaluation failed at %s: %s", reply.client_id, reply.error)

    def _publish_ready(self) -> None:
        """Publish, in commit order, the events whose evaluation is in."""
        while self.unpublished and not self.unpublished[0].pending:
            record = self.unpublished.pop(0)
            event, results, sizes = record.event, record.results, record.sizes
            ordered = sorted(results)
            evaluation = {c: results[c] for c in ordered}
            metrics = event.metrics
            if record.dropped:  # recorded with the round (the run store keeps its metrics)
                metrics = {**metrics, "evaluation": {"dropped": record.dropped}}
            self.bus.publish(dataclasses.replace(
                event, metrics=metrics, evaluation=evaluation,
                federated=weighted_mean(list(evaluation.values()),
                                        [sizes[c] for c in ordered])))
            if self.rule.asynchronous:
                self._checkpoint()


def round_flow(strategy: Strategy, initial: Params, settings: RunSettings,
               bus: EventBus | None = None, start: tuple[int, ServerState] | None = None,
               on_commit: OnCommit | None = None) -> Flow:
    """The flow of a run from `initial` parameters, or after commit r of a saved state
    (`start` = (r, state)). `on_commit(round, state)` runs after commits (checkpoints): every
    synchronous round; an asynchronous commit when no update waits in the buffer, its state
    carrying what is in flight."""
    done, state = start if start is not None else (0, strategy.init(initial))
    return _Flow(strategy, settings, state, done, bus or EventBus(), on_commit).run()
