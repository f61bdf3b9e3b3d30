"""Client: one institution answering tasks. `handle(Task) -> Reply`, never raising.

Order inside a fit task: client work (local training) then the aggregation stack's client half.
Any failure becomes `Reply.error` (a code and a reason): the server keeps serving the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation.base import Layer, declare_aux, find_staged
from fedsilo.algorithms.client_work import aux_names, get_client_work
from fedsilo.algorithms.personalization import ditto_round, personal_metrics
from fedsilo.core.messages import ErrorInfo, Reply, Task, TaskKind
from fedsilo.core.params import Params
from fedsilo.core.rng import generator
from fedsilo.core.trainer import Trainer
from fedsilo.errors import FedsiloError, ProtocolError

log = logging.getLogger(__name__)


class Client:
    """An institution: its id, its trainer (which holds its data), its layers' client half."""

    def __init__(self, client_id: str, trainer: Trainer, encoder: Layer) -> None:
        self.client_id = client_id
        self.trainer = trainer
        self.encoder = encoder
        self._contexts: dict[int, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}  # private across rounds: SCAFFOLD's c_i, Ditto's v_i

    def context(self, round: int) -> dict[str, Any]:
        """This institution's private scratch for a round (kept for the latest two rounds)."""
        if round not in self._contexts:
            self._contexts = {r: c for r, c in self._contexts.items() if r >= round - 1}
            self._contexts[round] = {"me": self.client_id, "round": round}
        return self._contexts[round]

    def handle(self, task: Task) -> Reply:
        try:
            if task.kind is TaskKind.EVALUATE:
                return self._evaluate(task)
            if task.kind is TaskKind.STAGE:
                return self._stage(task)
            name = task.fit.work
            work = get_client_work(name)
            rng = generator(task.fit.seed, task.round, self.client_id, "fit")
            update, n, metrics = work(self.trainer, task.params, dict(task.config), rng,
                                      self.state)
            if task.config.get("ditto"):
                metrics = {**metrics, **ditto_round(self.trainer, task.params, task.config,
                                                    rng, self.state)}
            context = self.context(task.round)
            declare_aux(context, aux_names(name, update))
            encoded = self.encoder.encode(update, n, task.layer_config, context)
            return self._reply(task, n, update=encoded, metrics=metrics)
        except FedsiloError as e:
            return self._reply(task, 0, error=ErrorInfo(e.code, str(e)))
        except Exception as e:  # a crash in user training code must not stop the server
            log.warning("client %s: task %s failed: %s: %s", self.client_id, task.task_id,
                        type(e).__name__, e)
            log.debug("traceback", exc_info=True)
            return self._reply(task, 0, error=ErrorInfo(  # the text may quote data: kept here
                "client_training_error", f"{type(e).__name__} in local training (details in "
                f"the institution's log)"))

    def _evaluate(self, task: Task) -> Reply:
        """The global model's test metrics, plus those of this institution's personal models."""
        n, metrics = self.trainer.evaluate(task.params)
        rng = generator(0, task.round, self.client_id, "personal")
        extra = personal_metrics(self.trainer, task.params, task.config, rng, self.state,
                                 task.evaluate.final)
        return self._reply(task, n, metrics={**metrics, **extra})

    def _stage(self, task: Task) -> Reply:
        staged = find_staged(self.encoder)
        if staged is None:
            raise ProtocolError(f"stage '{task.stage.stage}' asked, but this run's "
                                f"aggregator has no stages")
        answer = staged.stage_respond(task.stage.stage, task.stage.payload,
                                      self.context(task.round), self.client_id)
        return self._reply(task, 0, payload={"stage": answer})

    def _reply(self, task: Task, num_examples: int, update: Params | None = None,
               metrics: Mapping[str, float] | None = None, error: ErrorInfo | None = None,
               payload: Mapping[str, Any] | None = None) -> Reply:
        return Reply(task.task_id, self.client_id, task.round, task.model_version,
                     num_examples, update, dict(metrics or {}), dict(payload or {}), error)
