"""Institution: one data holder's side of a run, the same in simulation and deployment.

Its raw table never leaves this object. It answers a `prepare` task with aggregates of its
training split (for federated preprocessing), and fit / evaluate tasks through a `Client`
built from the run's setup, which every task carries: the fitted preprocessing, the model spec
and the aggregator spec. A restarted institution rebuilds everything from its next task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.secure.identity import Credentials, Signer, contribution_message
from fedsilo.client.client import Client
from fedsilo.client.factory import ModelCache, make_trainer
from fedsilo.client.policy import PolicyRefused, SitePolicy
from fedsilo.client.vertical_party import Spec, VerticalParty
from fedsilo.client.xgb_trainer import XGBoostTrainer
from fedsilo.core.messages import ErrorInfo, Reply, Signed, Task, TaskKind
from fedsilo.core.params import digest
from fedsilo.data.prepare import InstitutionSplit, Table, local_data, split_institutions
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.errors import ConfigError, DataError, FedsiloError
from fedsilo.trees.boost import STAGES as BOOST_STAGES
from fedsilo.trees.boost import START as BOOST_START
from fedsilo.trees.xgb import BOOSTER, BoostJob, booster_array, booster_params
from fedsilo.vertical.stages import OPEN as VERTICAL_OPEN
from fedsilo.vertical.stages import PREFIX as VERTICAL

log = logging.getLogger(__name__)
BOOST_TIMEOUT = 3600.0  # seconds an XGBoost worker may train: a hang guard
TableSource = Callable[[Mapping[str, Any]], Table]


class Institution:
    """Args:
        name: the institution's name (its certificate's common name in deployment).
        table: its rows (a table or array data), or a function of the server's read options
            returning them.
        models: where torch models come from (simulation shares one cache).
        split: a fixed train/test split, instead of splitting `table` (pooled reference).
        keys: local key material that never travels: its identity (client.key, client.pem,
            ca.pem), which signs every update it sends and its secure-aggregation keys.
        policy: the institution's site policy; every task is checked against it before any
            work (None: no checks, as in a simulation where one party plays everyone).
        insecure: a deployed institution started with --insecure: it may join an XGBoost
            tracker without TLS (else it refuses to).
    """

    def __init__(self, name: str, table: Table | TableSource | None = None,
                 models: ModelCache | None = None, split: InstitutionSplit | None = None,
                 keys: Mapping[str, bytes] | None = None, policy: SitePolicy | None = None,
                 insecure: bool = False):
        self.name = name
        self.policy = policy
        self._trained: dict[str, int] = {}  # fit tasks answered, per run
        self._table = table
        self._fixed = split
        self._keys = dict(keys or {})
        self._models = models or ModelCache()
        self._splits: dict[str, InstitutionSplit] = {}
        self._clients: dict[str, Client] = {}
        self._insecure = insecure
        self._boosting: dict[str, BoostJob] = {}  # XGBoost workers running, per run
        self._vertical_runs: dict[str, VerticalParty] = {}  # one vertical run at a time
        credentials = Credentials.from_keys(self._keys)
        self._signer: Signer | None = (credentials.signer_for(name) if credentials is not None
                                       and credentials.signer is not None else None)

    def handle(self, task: Task) -> Reply:
        if task.kind is TaskKind.PREPARE:
            return self._prepare(task)
        if task.kind is TaskKind.STAGE and task.stage.stage.startswith(VERTICAL):
            return self._vertical(task)
        try:
            self._check_policy(task)
            client = self._client(task.setup)
        except FedsiloError as e:
            return self._refusal(task, ErrorInfo(e.code, str(e)))
        if task.kind is TaskKind.STAGE and task.stage.stage in BOOST_STAGES:
            return self._boost(task, client)
        reply = client.handle(task)
        if task.kind is TaskKind.FIT and reply.ok:
            reply = self.signed(task, reply)
        if self.policy is not None and task.kind is TaskKind.FIT and reply.ok:
            self._trained[task.run_id] = self._trained.get(task.run_id, 0) + 1
        if self.policy is not None and task.kind is TaskKind.EVALUATE:
            reply = dataclasses.replace(reply, metrics=self.policy.allowed_metrics(reply.metrics))
        return reply

    def signed(self, task: Task, reply: Reply) -> Reply:
        """The reply with this institution's signature of (run, round, name, SHA-256 of the
        update), when it holds an identity key (a kit's client.key; a simulation's)."""
        if reply.update is None or self._signer is None:
            return reply
        sha = digest(reply.update)
        signature = self._signer.sign(contribution_message(task.run_id, task.round, self.name,
                                                            sha))
        signed = Signed(signature.hex(), self._signer.certificate)
        return dataclasses.replace(reply, payload={**reply.payload, **signed.to_payload()})

    def _boost(self, task: Task, client: Client) -> Reply:
        """A federated XGBoost run's stages: start this institution's worker (at once), then
        wait for its model and score it after each boosting round on the test split. Any
        failure is answered with its type only (details in this institution's log)."""
        stage, spec = task.stage, task.setup["model"]
        try:
            trainer = client.trainer
            if not isinstance(trainer, XGBoostTrainer):
                raise ConfigError("an XGBoost stage for a run of another model")
            if stage.stage == BOOST_START:
                tls = bool(stage.payload.get("tls"))
                if not tls and self.policy is not None and not self._insecure:
                    raise PolicyRefused("the task asks to join XGBoost's tracker without TLS; "
                                        "a deployed institution joins only over mutual TLS "
                                        "(or when started with --insecure)")
                self._close_boosting()  # a redelivered start: one worker per institution
                data = trainer.data
                self._boosting[task.run_id] = BoostJob(
                    data, booster_params(spec, data.task, data.num_classes),
                    int(spec["rounds"]), str(stage.payload["address"]),
                    int(stage.payload["world"]), int(stage.payload["rank"]),
                    self._keys if tls else None)
                return Reply(task.task_id, self.name, task.round, task.model_version, 0)
            job = self._boosting.pop(task.run_id, None)
            if job is None:
                raise ConfigError("no XGBoost worker was started here for this run")
            params = {BOOSTER: booster_array(job.result(BOOST_TIMEOUT))}
            curve = trainer.curve(params, int(spec["rounds"]))
            if self.policy is not None:
                curve = [self.policy.allowed_metrics(m) for m in curve]
            return self.signed(task, Reply(task.task_id, self.name, task.round,
                                           task.model_version, len(trainer.data.y_test),
                                           update=params, payload={"rounds": curve}))
        except FedsiloError as e:
            log.warning("institution '%s': XGBoost %s: %s", self.name, stage.stage, e)
            return self._refusal(task, ErrorInfo(e.code, str(e)))
        except Exception as e:  # noqa: BLE001  (its text may quote data: it stays in the log)
            log.exception("institution '%s': XGBoost %s failed", self.name, stage.stage)
            return self._refusal(task, ErrorInfo(ConfigError.code, f"XGBoost {stage.stage} "
                                                 f"failed here with {type(e).__name__}"))

    def _vertical(self, task: Task) -> Reply:
        """A deployed vertical run's stages (client/vertical_party.py). Failures are answered
        without data: a PSI mismatch's example IDs stay in this institution's log."""
        try:
            if task.stage.stage == VERTICAL_OPEN:
                spec = Spec.from_dict(task.stage.payload.get("spec") or {})
                spec.check(self.policy, self.name)  # before reading any data
                read = task.stage.payload.get("read") or {}
                table = self._table(read) if callable(self._table) else self._table
                if not isinstance(table, pd.DataFrame):
                    raise DataError(f"institution '{self.name}': a vertical run needs a table")
                self._vertical_runs = {task.run_id: VerticalParty(
                    self.name, task.run_id, spec, table, Credentials.from_keys(self._keys),
                    self.policy)}
                return self._vertical_runs[task.run_id].opened(task)
            party = self._vertical_runs.get(task.run_id)
            if party is None:
                raise ConfigError("no vertical run was opened here for this task's run")
            return self.signed(task, party.handle(task))  # what it sent, signed
        except FedsiloError as e:
            log.warning("institution '%s': %s: %s", self.name, task.stage.stage, e)
            return self._refusal(task, ErrorInfo(e.code, e.reason))  # examples stay here
        except Exception as e:  # noqa: BLE001  (its text may quote data: it stays in the log)
            log.exception("institution '%s': %s failed", self.name, task.stage.stage)
            return self._refusal(task, ErrorInfo(ConfigError.code, f"{task.stage.stage} failed "
                                                 f"here with {type(e).__name__}"))

    def _close_boosting(self) -> None:
        """Stop every XGBoost worker still running here (and delete its copy of the rows)."""
        for job in self._boosting.values():
            job.close()
        self._boosting.clear()

    def _check_policy(self, task: Task) -> None:
        """Refuse (and log here) a task the site policy does not allow."""
        if self.policy is None:
            return
        try:
            if task.kind is TaskKind.PREPARE:  # protection first, before reading the data
                self.policy.check_prepare_protection(task.config.get("secure"))
                train = self.split(task.config).train
                categorical = _data_settings(task.config)[1].categorical
                self.policy.check_prepare({c: int(train[c].nunique()) for c in categorical
                                           if isinstance(train, pd.DataFrame)
                                           and c in train})
            elif task.kind is TaskKind.EVALUATE:
                self.policy.check_evaluate(task.setup, task.round)
            else:
                self.policy.check_fit(task.setup, task.config, task.round,
                                      self._trained.get(task.run_id, 0), self.name)
        except PolicyRefused as e:
            log.warning("institution '%s' refused task %s: %s", self.name, task.task_id, e)
            raise

    def _refusal(self, task: Task, error: ErrorInfo) -> Reply:
        return Reply(task.task_id, self.name, task.round, task.model_version, 0, error=error)

    def split(self, config: Mapping[str, Any]) -> InstitutionSplit:
        """This institution's train/test split for the run described by `config`."""
        if self._fixed is not None:
            return self._fixed
        key, schema, read, fraction, seed = _data_settings(config)
        if key not in self._splits:
            table = self._table(read) if callable(self._table) else self._table
            if table is None:
                raise ConfigError(f"institution '{self.name}' has no data")
            self._splits[key] = split_institutions({self.name: table}, schema, fraction,
                                                   seed)[0]
        return self._splits[key]

    def _prepare(self, task: Task) -> Reply:
        """Aggregates of the training split, or why not: a reason that leaves this
        institution, so it never quotes the data (an unexpected failure is logged here in
        full and sent as its kind only)."""
        try:
            secure = task.config.get("secure")
            if not secure or secure.get("step") == "advertise":  # once, at its first step
                self._check_policy(task)
            if secure:  # statistics through the secure sum only
                from fedsilo.engine.secure_prepare import respond

                return respond(self, task, lambda: self.split(task.config), self._keys)
            split = self.split(task.config)
            stats = LocalStatistics.of(split.train, _data_settings(task.config)[1])
            return Reply(task.task_id, self.name, task.round, task.model_version,
                         len(split.train), payload={"statistics": stats.to_dict(),
                                                    "test_rows": len(split.test)})
        except FedsiloError as e:
            error = ErrorInfo(e.code, str(e))
        except (KeyError, TypeError, ValueError) as e:
            log.exception("institution '%s': summarising its data failed", self.name)
            error = ErrorInfo(DataError.code, f"institution '{self.name}': its data could not "
                              f"be summarised ({type(e).__name__}; details in its own log)")
        return self._refusal(task, error)

    def _client(self, setup: Mapping[str, Any]) -> Client:
        if not setup:
            raise ConfigError("task carries no run setup (preprocessing, model, aggregator)")
        key = json.dumps(setup, sort_keys=True)
        if key not in self._clients:
            pre = Preprocessor.from_dict(setup["preprocessor"])
            data = local_data(self.split(setup["data"]), pre)
            trainer = make_trainer(setup["model"], data, self._models, self.name)
            encoder = build_aggregator(setup["aggregator"], self._keys)
            self._clients = {key: Client(self.name, trainer, encoder)}
        return self._clients[key]


def _data_settings(config: Mapping[str, Any]) -> tuple[str, Schema, Mapping[str, Any], float,
                                                         int]:
    """How the server asks this institution to read and split its table: a cache key, the
    schema, the read options, the test fraction and the split seed.

    Raises:
        ConfigError: the settings are malformed (they come from the server, not the data).
    """
    try:
        key = json.dumps({k: config[k] for k in ("schema", "read", "split")}, sort_keys=True)
        split = config["split"]
        return (key, Schema.from_dict(config["schema"]), config["read"],
                float(split["test_fraction"]), int(split["seed"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"task's data settings are malformed: {e!r}") from None
