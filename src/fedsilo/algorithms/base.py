"""Strategy = sampler + client work + aggregator + server optimizer + commit rule.

The flow (engine/flow.py) opens a collection (`configure`: a cohort's tasks; `open`: a
buffer any institution's update may join), calls `accept` for every reply as it arrives,
`ready`, then `commit` (finalize the aggregate, apply the work's server rule and the server
optimizer, bump the model version). The commit rule (algorithms/commit.py) makes the same
object synchronous FedAvg, FedBuff or FedAsync. Every reply is checked before it is folded
in: against the task (names, shapes, dtypes, finiteness) and against what the server knows
of its institution (`admission`: metrics, example count, aggregation weight). No I/O here:
the same object runs in simulation and over the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fedsilo.aggregation.base import Accumulator, Layer, open_accumulator
from fedsilo.aggregation.mean import rescaled
from fedsilo.algorithms.admission import Admission
from fedsilo.algorithms.commit import WHOLE_COHORT, CommitRule
from fedsilo.algorithms.sampling import Stragglers, UniformSampler
from fedsilo.core.messages import (
    EvaluateTask,
    FitTask,
    Rejection,
    Reply,
    ReplySpec,
    Signed,
    Task,
    TaskKind,
)
from fedsilo.core.params import Params, ParamSpec, check_like, global_norm, spec_of
from fedsilo.core.rng import derive_seed
from fedsilo.errors import (
    AggregationError,
    MalformedUpdate,
    ProtocolError,
    StaleUpdate,
    UnknownClient,
    WrongRound,
)
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.optim.base import OptState, Scaled, ServerOptimizer, apply_step


@dataclass(frozen=True)
class ServerState:
    """Everything the server must keep between rounds (and checkpoint)."""

    params: Params
    version: int
    optimizer_state: OptState
    aggregator_state: Any = None
    work_state: Any = None  # the server half of the client work (SCAFFOLD's c)
    history: Mapping[int, Params] = field(default_factory=dict)  # FedAsync: recent versions
    flow: Mapping[str, Any] = field(default_factory=dict)  # async: tasks in flight (resume)


class WorkRule(Protocol):
    """The server half of a client work: what tasks carry besides the model, what replies
    carry besides the update, and how the aggregate becomes the pseudo-gradient."""

    @property
    def name(self) -> str: ...  # the client work the institutions run

    def init(self, params: Params) -> Any: ...

    def task_params(self, state: Any, params: Params) -> Params: ...

    def aux_spec(self, spec: ParamSpec) -> ParamSpec: ...  # side values a reply carries

    def update_spec(self, spec: ParamSpec) -> ParamSpec: ...  # the update and the side values

    def apply(self, state: Any, aggregate: Params, participants: int,
              population: int) -> tuple[Params, Any, dict[str, float]]: ...


@dataclass(frozen=True)
class PlainWork:
    """A client work whose aggregate is the pseudo-gradient itself (FedAvg, FedProx, FedSGD)."""

    name: str = "local_training"

    def init(self, params: Params) -> Any:
        return None

    def task_params(self, state: Any, params: Params) -> Params:
        return params

    def aux_spec(self, spec: ParamSpec) -> ParamSpec:
        """The side values replies carry besides the model update: none."""
        return {}

    def update_spec(self, spec: ParamSpec) -> ParamSpec:
        return {**spec, **self.aux_spec(spec)}

    def apply(self, state: Any, aggregate: Params, participants: int,
              population: int) -> tuple[Params, Any, dict[str, float]]:
        return aggregate, state, {}


CIPHERTEXT_BYTES = (256, 1 << 20)  # a variable-length (encrypted) entry: per value, per array


def expected_reply(encoded: ParamSpec, plain: ParamSpec) -> ReplySpec:
    """What a fit reply may carry: the `encoded` spec (the aggregator's), in exactly its bytes;
    an entry of variable length (a ciphertext) up to 256 bytes per value of the `plain` entry
    of that name, plus 1 MiB."""
    per_value, per_array = CIPHERTEXT_BYTES
    total = 0
    for name, s in encoded.items():
        if -1 in s.shape:
            values = plain[name].size if name in plain else 1
            total += per_value * values + per_array
        else:
            total += s.size * s.dtype.itemsize
    return ReplySpec(dict(encoded), total)


def judge_evaluation(admission: Admission, reply: Reply) -> Rejection | None:
    """None if an evaluation reply counts in the federated metric; else why not: the error it
    carries, or the admission rule it breaks (algorithms/admission.py)."""
    if reply.error is not None:
        return Rejection.of(reply)
    try:
        admission.check_evaluation(reply)
    except ProtocolError as e:
        return Rejection.of(reply, e)
    return None


def fold_into(aggregator: Layer, acc: Accumulator, reply: Reply,
              scale: float = 1.0) -> Rejection | None:
    """Fold a validated reply into `acc` (its update times `scale`, the weight entry
    excepted), or the rejection: the error the reply carries, or one the layers raise (e.g. a
    ciphertext that does not parse: all or nothing)."""
    if reply.error is not None:
        return Rejection.of(reply)
    assert reply.update is not None
    update = reply.update if scale == 1.0 else rescaled(reply.update, scale)
    try:
        aggregator.accumulate(acc, update)
    except ProtocolError as e:
        return Rejection.of(reply, e)
    return None


@dataclass
class Collection:
    """Updates being collected for one commit: a round's cohort (`cohort` set; a synchronous
    round, or a secure FedBuff group) or an open buffer (`cohort` None: any institution with
    an open task may join). The accumulator is updated in place as replies arrive."""

    round: int
    version: int  # the model version the collection's tasks were made from
    cohort: frozenset[str] | None
    spec: ParamSpec
    accumulator: Accumulator
    population: int = 1  # institutions available when the collection opened
    received: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    client_metrics: list[Mapping[str, float]] = field(default_factory=list)
    num_examples: list[int] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)
    trained_on: list[int] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # audit: each accepted update
    signed: dict[str, Signed] = field(default_factory=dict)  # audit: institutions' signatures

    @property
    def answered(self) -> set[str]:
        return set(self.received) | {r.client_id for r in self.rejected}

    def reject(self, rejection: Rejection) -> None:
        """Record an institution refused (once: its first refusal says why)."""
        if all(r.client_id != rejection.client_id for r in self.rejected):
            self.rejected.append(rejection)

    def witness(self, reply: Reply, fingerprint: str) -> None:
        """Keep an accepted update's digest and its institution's signature (audit); an
        institution twice in one buffer is keyed `name#n`."""
        key = reply.client_id
        if key in self.digests:
            key = f"{key}#{len(self.received)}"
        self.digests[key] = fingerprint
        signed = Signed.of(reply.payload, reply.round)
        if signed is not None:
            self.signed[key] = signed


@dataclass(frozen=True)
class Strategy:
    """A federated algorithm, assembled from parts (see the builders in this package)."""

    name: str
    sampler: UniformSampler
    work: WorkRule
    client_config: Mapping[str, Any]
    aggregator: Layer
    optimizer: ServerOptimizer
    min_replies: int = 1
    stragglers: Stragglers | None = None
    admission: Admission = field(default_factory=Admission)  # the run's prepare-stage counts
    rule: CommitRule = WHOLE_COHORT
    setup: Mapping[str, Any] = field(default_factory=dict)  # what every task carries

    def init(self, params: Params) -> ServerState:
        history = {0: dict(params)} if self.rule.mixing is not None else {}
        return ServerState(dict(params), 0, self.optimizer.init(params), self.aggregator.init(),
                           self.work.init(params), history)

    def fit_task(self, state: ServerState, client: str, round: int, run_id: str, seed: int,
                 config: Mapping[str, Any] | None = None,
                 layer_round: int | None = None) -> Task:
        """A fit task on the newest model (`config`: this institution's, e.g. a straggler's
        fewer epochs; `layer_round`: the round the layers' client config is made for)."""
        if config is None:
            config = self.client_config
        model_spec = spec_of(state.params)
        update_spec = self.work.update_spec(model_spec)
        expects = expected_reply(self.aggregator.encoded_spec(update_spec), update_spec)
        layer_cfg = self.aggregator.client_config(
            state.aggregator_state, round if layer_round is None else layer_round)
        params = self.work.task_params(state.work_state, state.params)
        return Task(run_id, round, state.version, TaskKind.FIT, client, params, config,
                    layer_cfg, expects, FitTask(self.work.name, derive_seed(seed, "client")),
                    self.setup)

    def configure(self, state: ServerState, available: Sequence[str], round: int,
                  run_id: str, seed: int) -> tuple[list[Task], Collection]:
        """Fit tasks for this round's cohort, and the collection that will gather them."""
        cohort = self.sampler.sample(available, round, seed)
        configs: dict[str, dict] = {cid: dict(self.client_config) for cid in cohort}
        if self.stragglers is not None:
            configs = self.stragglers.apply(configs, round, seed)
        tasks = [self.fit_task(state, cid, round, run_id, seed, c) for cid, c in configs.items()]
        return tasks, self._collection(state, round, frozenset(configs), len(available))

    def open(self, state: ServerState, population: int = 1) -> Collection:
        """An empty buffer (FedBuff, FedAsync): updates from any open task join it."""
        return self._collection(state, state.version, None, population)

    def _collection(self, state: ServerState, round: int, cohort: frozenset[str] | None,
                    population: int) -> Collection:
        model_spec = spec_of(state.params)
        encoded = self.aggregator.encoded_spec(self.work.update_spec(model_spec))
        acc = open_accumulator(self.aggregator, model_spec, self.work.aux_spec(model_spec))
        return Collection(round, state.version, cohort, encoded, acc, population)

    def accept(self, state: ServerState, coll: Collection, reply: Reply) -> Rejection | None:
        """Validate a reply, weigh it by its staleness (buffers) and fold it into the
        collection's accumulator, or say why not."""
        try:
            tau = self._validate(state, coll, reply)
            if reply.error is None:
                self.admission.check_fit(reply, self.aggregator)
        except ProtocolError as e:
            rejection = Rejection.of(reply, e)
            if coll.cohort is None or (reply.client_id in coll.cohort
                                       and reply.client_id not in coll.answered):
                coll.rejected.append(rejection)
            return rejection
        # FedBuff: s(τ) Δ per update; FedAsync mixes with s(τ) at commit, a group at commit
        buffered = coll.cohort is None and self.rule.mixing is None
        refused = fold_into(self.aggregator, coll.accumulator, reply,
                            self.rule.staleness(tau) if buffered else 1.0)
        if refused is not None:
            coll.rejected.append(refused)
            return refused
        coll.received.append(reply.client_id)
        coll.staleness.append(tau)
        coll.trained_on.append(reply.model_version)
        coll.client_metrics.append(dict(reply.metrics))
        coll.num_examples.append(reply.num_examples)
        return None

    def ready(self, coll: Collection) -> bool:
        if coll.cohort is None:
            return len(coll.received) >= (self.rule.buffer or 1)
        return coll.answered >= coll.cohort

    def commit(self, state: ServerState, coll: Collection) -> tuple[ServerState, dict]:
        """Finalize the aggregate, apply the work's server rule and the server optimizer (or
        FedAsync's mixing): the new global model.

        Raises:
            AggregationError: fewer accepted replies than `min_replies`; nothing is applied.
        """
        if coll.cohort is not None and len(coll.received) < self.min_replies:
            raise AggregationError(
                f"round {coll.round}: {len(coll.received)} accepted replies, "
                f"need {self.min_replies}; rejected: {[r.client_id for r in coll.rejected]}")
        agg_state, aggregate, agg_metrics = self.aggregator.finalize(
            state.aggregator_state, coll.accumulator)
        self._check_total_weight(agg_metrics, coll.num_examples)
        pseudo_grad, work_state, work_metrics = self.work.apply(
            state.work_state, aggregate, len(coll.received), coll.population)
        fit = {**weighted_mean(coll.client_metrics, coll.num_examples), **work_metrics}
        if coll.cohort is None:
            return self._commit_buffer(state, coll, pseudo_grad, agg_state, work_state,
                                       {"client_work": fit, "aggregator": agg_metrics})
        optimizer, extra = self.optimizer, {}
        if self.rule.asynchronous:  # a secure FedBuff group: its sum weighed by s(τ)
            tau = state.version - coll.version
            weight = self.rule.staleness(tau)
            optimizer = Scaled(self.optimizer, weight)
            extra = {"staleness": {"mean": float(tau), "max": float(tau), "weight": weight}}
        step, opt_state = optimizer.update(pseudo_grad, state.optimizer_state, state.params)
        new = replace(state, params=apply_step(state.params, step), version=state.version + 1,
                      optimizer_state=opt_state, aggregator_state=agg_state,
                      work_state=work_state)
        return new, {"client_work": fit, "aggregator": agg_metrics,
                     "server_opt": {"update_norm": global_norm(step)}, **extra}

    def _commit_buffer(self, state: ServerState, coll: Collection, pseudo_grad: Params,
                       agg_state: Any, work_state: Any, metrics: dict) -> tuple[ServerState,
                                                                                 dict]:
        """FedBuff: the server optimizer on the buffered mean; FedAsync: mixing."""
        rule = self.rule
        if rule.mixing is None:
            step, opt_state = self.optimizer.update(pseudo_grad, state.optimizer_state,
                                                    state.params)
            params = apply_step(state.params, step)
        else:  # θ ← (1 - α s(τ)) θ + α s(τ) (θ_τ - Δ)
            alpha = rule.mixing * rule.staleness(coll.staleness[0])
            base = state.history[coll.trained_on[0]]
            params = {n: ((1 - alpha) * p + alpha * (base[n] - pseudo_grad[n])).astype(p.dtype)
                      for n, p in state.params.items()}
            opt_state = state.optimizer_state
        version = state.version + 1
        history = dict(state.history)
        if rule.mixing is not None:
            history[version] = params
            keep = version - (rule.max_staleness or 0)
            history = {v: p for v, p in history.items() if v >= keep}
        new = replace(state, params=params, version=version, optimizer_state=opt_state,
                      aggregator_state=agg_state, work_state=work_state, history=history)
        return new, {**metrics,
                     "staleness": {"mean": sum(coll.staleness) / len(coll.staleness),
                                   "max": float(max(coll.staleness))},
                     "server_opt": {"update_norm": global_norm(
                         {n: params[n] - state.params[n] for n in params})}}

    def _check_total_weight(self, agg_metrics: Mapping[str, float], counts: list[int]) -> None:
        """The weights summed must be those the contributors' example counts give: under
        secure aggregation the server cannot see one institution's weight, only the total.

        Raises:
            AggregationError: they differ (someone sent a weight of its own); nothing applied.
        """
        total = agg_metrics.get("total_weight")
        expected = self.admission.expected_total(self.aggregator, counts)
        if total is not None and expected is not None and not abs(total - expected) <= 0.5:
            raise AggregationError("the total aggregation weight is not the one the "
                                   "contributors' example counts give (a contribution carries "
                                   "a weight of its own): round aborted")

    def evaluate_tasks(self, state: ServerState, clients: Sequence[str], round: int,
                       run_id: str, final: bool = False) -> list[Task]:
        """Federated evaluation: every institution scores the global model on its test split
        (and its personal models; local fine-tuning runs on the `final` evaluation)."""
        return [Task(run_id, round, state.version, TaskKind.EVALUATE, cid, state.params,
                     self.client_config, body=EvaluateTask(final), setup=self.setup)
                for cid in sorted(clients)]

    def _validate(self, state: ServerState, coll: Collection, reply: Reply) -> int:
        """The reply's staleness τ (versions since its task), or the protocol error."""
        if coll.cohort is not None:
            self._validate_member(coll, reply)
        if reply.model_version > state.version:
            raise WrongRound(f"update from '{reply.client_id}' claims model version "
                             f"{reply.model_version}; the newest is {state.version}")
        tau = state.version - reply.model_version
        limit = self.rule.max_staleness
        if coll.cohort is None and limit is not None and tau > limit:
            raise StaleUpdate(f"update from '{reply.client_id}' was trained on version "
                              f"{reply.model_version}, the model is at version {state.version}: "
                              f"staleness {tau} > max_staleness {limit}")
        if self.rule.mixing is not None and reply.model_version not in state.history:
            raise StaleUpdate(f"update from '{reply.client_id}' was trained on version "
                              f"{reply.model_version}, which the server no longer keeps")
        if reply.error is None:
            if reply.update is None:
                raise MalformedUpdate(f"reply from '{reply.client_id}' carries no update")
            check_like(reply.update, coll.spec, f"update from '{reply.client_id}'")
        return tau

    @staticmethod
    def _validate_member(coll: Collection, reply: Reply) -> None:
        assert coll.cohort is not None
        if reply.client_id not in coll.cohort:
            raise UnknownClient(f"reply from '{reply.client_id}', which was not asked in round "
                                f"{coll.round}")
        if reply.round != coll.round:
            raise WrongRound(f"reply from '{reply.client_id}' is for round {reply.round}, "
                             f"round {coll.round} is open")
        if reply.client_id in coll.answered:
            raise MalformedUpdate(f"'{reply.client_id}' already answered round {coll.round}")
