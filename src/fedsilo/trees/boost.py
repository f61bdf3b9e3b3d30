"""The server's half of a federated XGBoost run, over any transport: start XGBoost's tracker,
ask every institution to start its worker (stage `xgboost.start`: its rank, the tracker's
address), then for the result (stage `xgboost.finish`: the model, and its test metrics after
each boosting round). Every institution must return the same model (XGBoost's collective
makes them equal); one round event per boosting round follows, for the report, the run store
and the dashboard. Two stages because the workers must all run at once, and an in-process
transport answers one task after another.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.algorithms.base import ServerState
from fedsilo.core.messages import (
    Reply,
    ReplySpec,
    Signed,
    StageTask,
    Task,
    TaskKind,
)
from fedsilo.core.params import ArraySpec, digest
from fedsilo.core.transport import ServerTransport
from fedsilo.engine.events import EventBus, RoundEvent
from fedsilo.engine.flow import RunHistory
from fedsilo.engine.stages import ask_all
from fedsilo.errors import AggregationError, ProtocolError
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.optim.base import OptState
from fedsilo.trees.xgb import BOOSTER, Tracker, TrackerTls

log = logging.getLogger(__name__)
START, FINISH = "xgboost.start", "xgboost.finish"
STAGES = (START, FINISH)
MAX_MODEL_BYTES = 256 << 20


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def boost(transport: ServerTransport, setup: Mapping[str, Any], run_id: str, bus: EventBus,
          host: str = "127.0.0.1", port: int | None = None, tls: TrackerTls | None = None,
          timeout: float | None = None) -> RunHistory:
    """Train the model `setup` names (kind "xgboost") across the transport's institutions.

    Raises:
        AggregationError: an institution could not start or finish its worker (its reason),
            or the institutions returned different models.
    """
    names = sorted(transport.clients())
    port = port or free_port()
    tracker = Tracker(len(names), port, tls)
    try:
        address = f"{host}:{port}"
        ask_all(transport, [_task(run_id, n, START, {"address": address, "world": len(names),
                                                     "tls": tls is not None,
                                                     "rank": rank}, setup)
                            for rank, n in enumerate(names)], timeout, "XGBoost")
        replies = ask_all(transport, [_task(run_id, n, FINISH, {}, setup) for n in names],
                          timeout, "XGBoost")
    finally:
        tracker.stop()
    models = {n: r.update[BOOSTER] for n, r in replies.items() if r.update}
    shas = {hashlib.sha256(m.tobytes()).hexdigest() for m in models.values()}
    if len(models) != len(names) or len(shas) != 1:
        raise AggregationError(f"XGBoost: the institutions returned {len(shas)} different "
                               f"models (the collective makes them equal)")
    params = {BOOSTER: next(iter(models.values()))}
    history = RunHistory(state=ServerState(params, int(setup["model"]["rounds"]), OptState()))
    for event in _events(replies, names, digest(params)):
        history.events.append(event)
        bus.publish(event)
    return history


def _task(run_id: str, name: str, stage: str, payload: dict[str, Any],
          setup: Mapping[str, Any]) -> Task:
    expects = (ReplySpec({BOOSTER: ArraySpec((-1,), np.dtype(np.uint8))}, MAX_MODEL_BYTES)
               if stage == FINISH else None)
    return Task(run_id, 1, 0, TaskKind.STAGE, name, {}, expects=expects,
                body=StageTask(stage, payload), setup=dict(setup))


def _events(replies: Mapping[str, Reply], names: list[str],
            model_digest: str) -> list[RoundEvent]:
    """One event per boosting round: each institution's test metrics after that round."""
    curves = {n: replies[n].payload.get("rounds") for n in names}
    if not all(isinstance(c, list) and c for c in curves.values()):
        raise ProtocolError("XGBoost: a finish reply carries no per-round metrics")
    rounds = min(len(c) for c in curves.values())  # type: ignore[arg-type]
    events = []
    for k in range(rounds):
        evaluation = {n: {m: float(v) for m, v in curves[n][k].items()}  # type: ignore[index]
                      for n in names}
        sizes = [float(replies[n].num_examples) for n in names]
        federated = weighted_mean([evaluation[n] for n in names], sizes)
        last = k == rounds - 1  # the model itself: what each institution sent, signed
        events.append(RoundEvent(
            k + 1, k + 1, tuple(names), {}, {"xgboost": {"trees": k + 1}}, evaluation,
            federated, model_digest=model_digest if last else "",
            digests={n: digest(replies[n].update or {}) for n in names} if last else {},
            signed={n: sig for n in names if (sig := Signed.of(replies[n].payload, 1))}
            if last else {}))
    return events
