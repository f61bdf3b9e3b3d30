"""Extra exchanges of an aggregation layer around a round's collection (SecAgg+: advertise
and share keys before it, unmask after it). The layer says what to ask each institution and
folds in the answers; this module only carries the messages, over any transport."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from fedsilo.algorithms.base import OpenRound
from fedsilo.core.messages import Task, TaskKind
from fedsilo.core.rng import derive_seed
from fedsilo.transport.base import ServerTransport

log = logging.getLogger(__name__)


def run_stage(transport: ServerTransport, stage: str, requests: Mapping[str, Any], round: int,
              version: int, run_id: str, client_config: Mapping[str, Any],
              timeout: float | None) -> dict[str, Mapping[str, Any]]:
    """Send each institution its request for `stage`; return the answers that came back."""
    transport.dispatch([Task(run_id, round, version, TaskKind.STAGE, cid, {},
                             {**client_config, "stage": stage, "payload": payload})
                        for cid, payload in sorted(requests.items())])
    answers: dict[str, Mapping[str, Any]] = {}
    for reply in transport.poll(timeout):
        transport.acknowledge(reply, None)
        answer = reply.payload.get("stage") if reply.ok else None
        if isinstance(answer, Mapping):
            answers[reply.client_id] = answer
        else:
            log.warning("round %d, stage %s: no answer from %s: %s", round, stage,
                        reply.client_id, reply.error)
    return answers


def before_collection(staged: Any, transport: ServerTransport, tasks: list[Task],
                      open_round: OpenRound, seed: int, timeout: float | None,
                      client_config: Mapping[str, Any]) -> list[Task]:
    """Run the layer's pre-collection stages; return the fit tasks of those still in, each
    carrying its layer's per-institution configuration."""
    acc, rnd = open_round.accumulator, open_round.round
    alive = [t.client_id for t in tasks]
    staged.begin(acc, rnd, derive_seed(seed, rnd, "secure-aggregation"), alive)
    for stage in staged.pre_stages:
        answers = run_stage(transport, stage, staged.stage_requests(stage, acc, alive), rnd,
                            open_round.version, tasks[0].run_id, client_config, timeout)
        alive = staged.stage_collect(stage, acc, answers)
    open_round.cohort = frozenset(alive)
    return [dataclasses.replace(t, layer_config={**t.layer_config,
                                                 **staged.fit_config(acc, t.client_id)})
            for t in tasks if t.client_id in open_round.cohort]


def after_collection(staged: Any, transport: ServerTransport, open_round: OpenRound,
                     run_id: str, timeout: float | None,
                     client_config: Mapping[str, Any]) -> None:
    """Run the layer's post-collection stages over the institutions whose input arrived."""
    acc, alive = open_round.accumulator, sorted(open_round.received)
    for stage in staged.post_stages:
        answers = run_stage(transport, stage, staged.stage_requests(stage, acc, alive),
                            open_round.round, open_round.version, run_id, client_config,
                            timeout)
        alive = staged.stage_collect(stage, acc, answers)
