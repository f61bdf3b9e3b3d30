"""Extra exchanges of an aggregation layer around a round's collection (SecAgg+: advertise
and share keys before it, unmask after it). The layer says what to ask each institution,
checks each answer (`stage_check`) and folds in those that pass (`stage_collect`); this module
carries the messages, over any transport. An institution whose answer is an error or fails the
check is out of the rest of the round, recorded as a rejection with the reason (also sent back
to it): the round goes on without it while the layer can still recover."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation.base import Accumulator
from fedsilo.algorithms.base import OpenRound, Rejection
from fedsilo.core.messages import Task, TaskKind
from fedsilo.core.rng import derive_seed
from fedsilo.errors import ProtocolError
from fedsilo.transport.base import ServerTransport

log = logging.getLogger(__name__)


def run_stage(staged: Any, transport: ServerTransport, stage: str, acc: Accumulator,
              alive: list[str], open_round: OpenRound, run_id: str,
              client_config: Mapping[str, Any], timeout: float | None) -> list[str]:
    """Ask each institution in `alive` for `stage`; record the refused ones in `open_round`;
    return who is still in (the layer's verdict on the answers that passed its check)."""
    requests = staged.stage_requests(stage, acc, alive)
    tasks = {cid: Task(run_id, open_round.round, open_round.version, TaskKind.STAGE, cid, {},
                       {**client_config, "stage": stage, "payload": payload})
             for cid, payload in sorted(requests.items())}
    transport.dispatch(list(tasks.values()))
    answers: dict[str, Any] = {}
    for reply in transport.poll(timeout):
        task = tasks.get(reply.client_id)
        if task is None or reply.task_id != task.task_id or reply.client_id in answers:
            transport.acknowledge(reply, Rejection(reply.client_id, ProtocolError.code,
                                                   f"not an answer to {stage} now"))
            continue
        rejection = None
        if reply.error is not None:
            rejection = Rejection.of(reply)
        else:
            try:
                answers[reply.client_id] = staged.stage_check(stage, acc, reply.client_id,
                                                              reply.payload.get("stage"))
            except ProtocolError as e:
                rejection = Rejection(reply.client_id, e.code, f"stage {stage}: {e}")
        transport.acknowledge(reply, rejection)
        if rejection is not None:
            _record(open_round, rejection, stage)
    return staged.stage_collect(stage, acc, answers)


def _record(open_round: OpenRound, rejection: Rejection, stage: str) -> None:
    log.warning("round %d, stage %s: %s is out: [%s] %s", open_round.round, stage,
                rejection.client_id, rejection.code, rejection.reason)
    if all(r.client_id != rejection.client_id for r in open_round.rejected):
        open_round.rejected.append(rejection)


def before_collection(staged: Any, transport: ServerTransport, tasks: list[Task],
                      open_round: OpenRound, seed: int, timeout: float | None,
                      client_config: Mapping[str, Any]) -> list[Task]:
    """Run the layer's pre-collection stages; return the fit tasks of those still in, each
    carrying its layer's per-institution configuration."""
    acc, rnd = open_round.accumulator, open_round.round
    alive = [t.client_id for t in tasks]
    staged.begin(acc, rnd, derive_seed(seed, rnd, "secure-aggregation"), alive)
    for stage in staged.pre_stages:
        alive = run_stage(staged, transport, stage, acc, alive, open_round, tasks[0].run_id,
                          client_config, timeout)
    open_round.cohort = frozenset(alive)
    return [dataclasses.replace(t, layer_config={**t.layer_config,
                                                 **staged.fit_config(acc, t.client_id)})
            for t in tasks if t.client_id in open_round.cohort]


def after_collection(staged: Any, transport: ServerTransport, open_round: OpenRound,
                     run_id: str, timeout: float | None,
                     client_config: Mapping[str, Any]) -> None:
    """Run the layer's post-collection stages over the institutions whose input arrived."""
    alive = sorted(open_round.received)
    for stage in staged.post_stages:
        alive = run_stage(staged, transport, stage, open_round.accumulator, alive, open_round,
                          run_id, client_config, timeout)
