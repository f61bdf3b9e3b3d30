"""Drivers: thin loops that carry a flow's tasks and replies (engine/flow.py) over a
transport, under a clock the config names.

- virtual (simulation): each task runs in process when sent (a pool transport, e.g. Ray's,
  starts an outbox's tasks at once, in parallel, and hands their replies back in the order
  sent, so the run is the same as in process; a task it lost counts as past its deadline).
  Under a `VirtualClock` a fit reply arrives at now + its simulated duration (replies due
  at the same instant arrive together); other tasks, and every task of a synchronous run,
  arrive at once, one after another in the order sent (so a round's replies are folded as
  they are made: server memory O(model)). Deterministic: the same seed, the same timeline.
- wall (deployment, or a real-time simulation): tasks go to the institutions; replies are
  handed over as they arrive; a task unanswered for `round_timeout` seconds is withdrawn.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from fedsilo.algorithms.base import ServerState, Strategy
from fedsilo.core.messages import Rejection, Reply, Task, TaskKind
from fedsilo.core.params import Params
from fedsilo.core.transport import ServerTransport
from fedsilo.engine.clock import Clock, VirtualClock, WallClock, examples_processed
from fedsilo.engine.events import EventBus
from fedsilo.engine.flow import (
    Event,
    Flow,
    OnCommit,
    Outbox,
    RunHistory,
    RunSettings,
    round_flow,
)
from fedsilo.errors import AggregationError, TaskLost


def train(strategy: Strategy, transport: ServerTransport | Caller, initial: Params,
          settings: RunSettings, clock: Clock = None, bus: EventBus | None = None,
          start: tuple[int, ServerState] | None = None,
          on_commit: OnCommit | None = None) -> RunHistory:
    """Train `strategy` over `transport` from `initial` (or after commit r of a saved state,
    `start` = (r, state)) under `clock`: a VirtualClock or None (simulated time: an
    in-process transport) or a WallClock. A synchronous round waits for its whole cohort, so
    simulated durations would not change what it computes: the virtual clock times
    asynchronous runs only."""
    flow = round_flow(strategy, initial, settings, bus, start, on_commit)
    now = float(start[1].flow.get("now", 0.0)) if start is not None else 0.0
    if isinstance(clock, WallClock):
        return drive_wall(flow, transport, settings, now)  # type: ignore[arg-type]
    return drive_virtual(flow, transport,  # type: ignore[arg-type]
                         clock if strategy.rule.asynchronous else None, now)


class Caller(Protocol):
    """A transport that can run a task now (in process)."""

    def clients(self) -> list[str]: ...

    def call(self, task: Task) -> Reply: ...

    def acknowledge(self, reply: Reply, rejection: Rejection | None) -> None: ...


def drive_virtual(flow: Flow, transport: Caller, clock: VirtualClock | None,
                  now: float = 0.0) -> RunHistory:
    """Run `flow` in simulated time from `now` (`clock` None: every task takes no time)."""
    clients = tuple(transport.clients())
    seq = 0
    at_once: deque[Task] = deque()
    due: list[tuple[float, int, Reply]] = []
    lost: list[str] = []  # tasks a pool transport lost: expired at the next event
    start = getattr(transport, "start", None)  # a pool's: begin an outbox's tasks at once
    flow.send(None)  # type: ignore[arg-type]
    event = Event(now, clients)
    while True:
        out = _step(flow, event, transport)
        if isinstance(out, RunHistory):
            return out
        if start is not None and out.tasks:
            start(out.tasks)
        for task in out.tasks:
            if clock is None or task.kind is not TaskKind.FIT:
                at_once.append(task)
                continue
            try:
                reply = transport.call(task)
            except TaskLost:
                lost.append(task.task_id)
                continue
            seconds = clock.duration(task.client_id,
                                     examples_processed(task.config, reply.num_examples),
                                     task.round)
            heapq.heappush(due, (out.since.get(task.task_id, now) + seconds, seq, reply))
            seq += 1
        if at_once:
            task = at_once.popleft()
            try:
                event = Event(now, clients, (transport.call(task),), tuple(lost))
            except TaskLost:
                event = Event(now, clients, (), (*lost, task.task_id))
            lost = []
        elif lost:
            event, lost = Event(now, clients, (), tuple(lost)), []
        elif due:
            now = due[0][0]
            batch = []
            while due and due[0][0] == now:
                batch.append(heapq.heappop(due)[2])
            event = Event(now, clients, tuple(batch))
        else:
            raise AggregationError("the run cannot go on: no task in flight and none to send "
                                   "(too many institutions dropped out)")


def drive_wall(flow: Flow, transport: ServerTransport, settings: RunSettings,
               now: float = 0.0) -> RunHistory:
    """Run `flow` in real time over `transport` (gRPC, or in process), its clock reading
    `now` seconds at the start (a resumed run's)."""
    start = time.monotonic() - now
    sent: dict[str, float] = {}
    flow.send(None)  # type: ignore[arg-type]
    event = Event(now, tuple(transport.clients()))
    while True:
        out = _step(flow, event, transport)
        if isinstance(out, RunHistory):
            return out
        if out.tasks:
            transport.dispatch(out.tasks)
            sent.update({t.task_id: time.monotonic() for t in out.tasks})
        reply = transport.next_reply(0.5)
        if reply is not None:
            sent.pop(reply.task_id, None)
        expired = _late(sent, settings.round_timeout)
        if expired:
            transport.withdraw(expired)
        elapsed = time.monotonic() - start
        stop = settings.time_limit is not None and elapsed > settings.time_limit
        event = Event(elapsed, tuple(transport.clients()), () if reply is None else (reply,),
                      tuple(expired), stop)


def _step(flow: Flow, event: Event, transport: Caller | ServerTransport) -> Outbox | RunHistory:
    """Hand `event` to the flow and send its acknowledgements: what it asks next, or the
    run's history once its last outbox is out."""
    out = flow.send(event)
    for reply, rejection in out.acks:
        transport.acknowledge(reply, rejection)
    return _ended(flow) if out.last else out


def _ended(flow: Flow) -> RunHistory:
    """The history a flow returns once its last outbox is sent."""
    try:
        flow.send(Event(0.0, ()))
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    raise RuntimeError("the flow went on after its last outbox")


def _late(sent: dict[str, float], limit: float | None) -> Sequence[str]:
    if limit is None:
        return ()
    now = time.monotonic()
    late = [task_id for task_id, t in sent.items() if now - t > limit]
    for task_id in late:
        del sent[task_id]
    return late
