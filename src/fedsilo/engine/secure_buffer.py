"""FedBuff with secure aggregation (simulation, virtual clock): the buffer of K is a
secure-aggregation group. Idle institutions form groups of K as they become free; each group
runs the secure sum's key exchange, trains on the newest model, and is unmasked and applied
when its members are in — the server only ever sees the group's sum. Several groups are in
flight at once, so a slow institution holds up only its own group.

All members of a group trained on the same model version, so staleness is a property of the
group: the group's mean update is scaled by s(τ), τ = versions committed since the group
started, before the server optimizer (which FedBuff's per-update scaling cannot do under
masking, since the server cannot scale a masked update).
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import deque
from dataclasses import dataclass

from fedsilo.aggregation.base import find_staged
from fedsilo.algorithms.base import OpenRound, ServerState, Strategy, witness
from fedsilo.algorithms.staleness import Staleness
from fedsilo.core.messages import Reply
from fedsilo.core.params import Params, digest
from fedsilo.engine.async_runner import AsyncHistory, AsyncSettings, collect_evaluation
from fedsilo.engine.clock import VirtualClock, examples_processed
from fedsilo.engine.events import EventBus, RoundEvent
from fedsilo.engine.stages import after_collection, before_collection
from fedsilo.errors import AggregationError, ConfigError
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.optim.base import Scaled
from fedsilo.transport.inprocess import InProcessTransport


@dataclass
class _Group:
    open_round: OpenRound
    base_version: int
    members: list[str]
    pending: int


def run_secure_fedbuff(strategy: Strategy, transport: InProcessTransport, initial: Params,
                       settings: AsyncSettings, clock: VirtualClock, staleness: Staleness,
                       group_size: int, bus: EventBus | None = None) -> AsyncHistory:
    """Secure FedBuff under the virtual clock; `strategy` carries the secure aggregator.

    Raises:
        ConfigError: the aggregator has no secure sum, or groups cannot meet its threshold.
    """
    staged = find_staged(strategy.aggregator)
    if staged is None:
        raise ConfigError("secure FedBuff needs a secure aggregator ([aggregation] secure)")
    clients = transport.clients()
    if group_size > len(clients):
        raise ConfigError(f"fedbuff: buffer_size {group_size} > {len(clients)} institutions")
    bus = bus or EventBus()
    events: list[RoundEvent] = []
    bus.subscribe(events.append)
    state = strategy.init(initial)
    idle: deque[str] = deque(clients)
    heap: list[tuple[float, int, int, Reply]] = []
    groups: dict[int, _Group] = {}
    started, now, seq, gid = time.perf_counter(), 0.0, 0, 0

    def launch(now: float) -> None:
        nonlocal seq, gid
        gid += 1
        members = [idle.popleft() for _ in range(group_size)]
        tasks, open_round = strategy.configure(state, members, gid, settings.run_id,
                                               settings.seed)
        tasks = before_collection(staged, transport, tasks, open_round, settings.seed, None,
                                  strategy.client_config)
        for task in tasks:
            reply = transport.call(task)
            done = now + clock.duration(task.client_id,
                                        examples_processed(task.config, reply.num_examples),
                                        gid)
            heapq.heappush(heap, (done, seq, gid, reply))
            seq += 1
        groups[gid] = _Group(open_round, state.version, members, len(tasks))
        idle.extend(m for m in members if m not in open_round.cohort)  # dropped at setup

    while state.version < settings.versions:
        while len(idle) >= group_size:
            launch(now)
        if not heap:
            raise AggregationError("secure FedBuff: no group can run (too many dropouts)")
        now, _, g, reply = heapq.heappop(heap)
        group = groups[g]
        fingerprint = reply.fingerprint() if settings.audit else ""  # before a layer reuses it
        if strategy.accept(group.open_round, reply) is None and settings.audit:
            witness(group.open_round, reply.client_id, reply, fingerprint)
        group.pending -= 1
        if group.pending == 0:
            state = _commit(strategy, staged, transport, state, groups.pop(g), settings, now,
                            staleness, bus, started)
            idle.extend(group.members)
    return AsyncHistory(events, state, now)


def _commit(strategy: Strategy, staged: object, transport: InProcessTransport,
            state: ServerState, group: _Group, settings: AsyncSettings, now: float,
            staleness: Staleness, bus: EventBus, started: float) -> ServerState:
    """Unmask the group's sum and apply it, scaled by the group's staleness weight."""
    r = group.open_round
    tau = state.version - group.base_version
    weight = staleness(tau)
    scaled = dataclasses.replace(strategy, optimizer=Scaled(strategy.optimizer, weight))
    try:
        after_collection(staged, transport, r, settings.run_id, None, strategy.client_config)
        state, metrics = scaled.commit(state, r)
    except AggregationError as e:
        metrics = {"aborted": str(e)}
    v = state.version
    evaluation: dict[str, dict[str, float]] = {}
    sizes: list[float] = []
    if "aborted" not in metrics and (v % settings.evaluate_every == 0
                                     or v == settings.versions):
        tasks = strategy.evaluate_tasks(state, transport.clients(), v, settings.run_id,
                                        v == settings.versions)
        evaluation, sizes = collect_evaluation([transport.call(t) for t in tasks],
                                               strategy.admission)
    bus.publish(RoundEvent(
        round=v, version=v, participants=tuple(r.received),
        rejected={x.client_id: f"[{x.code}] {x.reason}" for x in r.rejected},
        metrics={**metrics, "clock": {"time": now},
                 "staleness": {"mean": float(tau), "max": float(tau), "weight": weight}},
        evaluation=evaluation, federated=weighted_mean(list(evaluation.values()), sizes),
        seconds=time.perf_counter() - started, digests=dict(r.digests),
        model_digest=digest(state.params) if settings.audit else "", signed=dict(r.signed)))
    return state
