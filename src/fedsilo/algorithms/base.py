"""Strategy = sampler + client work + aggregator + server optimizer + commit rule.

The round loop (engine/) calls, for each round: `configure` (tasks for the cohort and an open
round holding the streaming accumulator), `accept` for every reply as it arrives, `ready`, then
`commit` (finalize the aggregate, apply the server optimizer, bump the model version).
Every reply is checked before it is folded in: against the task (names, shapes, dtypes,
finiteness) and against what the server knows of its institution (`admission`: metrics,
example count, aggregation weight). No I/O here: the same object runs in simulation and over
the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fedsilo.aggregation.base import Accumulator, Layer, open_accumulator
from fedsilo.aggregation.mean import rescaled
from fedsilo.algorithms.admission import Admission
from fedsilo.algorithms.sampling import Stragglers, UniformSampler
from fedsilo.core.messages import Reply, ReplySpec, Signed, Task, TaskKind
from fedsilo.core.params import Params, ParamSpec, check_like, global_norm, spec_of
from fedsilo.core.rng import derive_seed
from fedsilo.errors import (
    AggregationError,
    MalformedUpdate,
    ProtocolError,
    UnknownClient,
    WrongRound,
)
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.optim.base import OptState, ServerOptimizer, apply_step


@dataclass(frozen=True)
class ServerState:
    """Everything the server must keep between rounds (and checkpoint)."""

    params: Params
    version: int
    optimizer_state: OptState
    aggregator_state: Any = None
    work_state: Any = None  # the server half of the client work (SCAFFOLD's c)


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


@dataclass(frozen=True)
class Rejection:
    """Why a reply was not folded into the aggregate."""

    client_id: str
    code: str
    reason: str

    @classmethod
    def of(cls, reply: Reply, error: ProtocolError | None = None) -> Rejection:
        """From a protocol error found in `reply`, or from the error `reply` carries."""
        if error is not None:
            return cls(reply.client_id, error.code, str(error))
        assert reply.error is not None
        return cls(reply.client_id, reply.error.code, reply.error.reason)


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
    ciphertext that does not parse: all or nothing). Shared by sync rounds and async buffers."""
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
class OpenRound:
    """The round being collected. The accumulator is updated in place as replies arrive."""

    round: int
    version: int
    cohort: frozenset[str]
    spec: ParamSpec
    accumulator: Accumulator
    population: int = 1  # institutions available when the cohort was drawn
    received: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    client_metrics: dict[str, Mapping[str, float]] = field(default_factory=dict)
    num_examples: dict[str, int] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # audit: each accepted update
    signed: dict[str, Signed] = field(default_factory=dict)  # audit: institutions' signatures

    @property
    def answered(self) -> set[str]:
        return set(self.received) | {r.client_id for r in self.rejected}


class Witnessed(Protocol):
    """What keeps the audit record of accepted updates (an open round, a buffer)."""

    digests: dict[str, str]
    signed: dict[str, Signed]


def witness(record: Witnessed, key: str, reply: Reply, fingerprint: str) -> None:
    """Keep an accepted update's digest and its institution's signature under `key`."""
    record.digests[key] = fingerprint
    signed = Signed.of(reply.payload, reply.round)
    if signed is not None:
        record.signed[key] = signed


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

    def init(self, params: Params) -> ServerState:
        return ServerState(dict(params), 0, self.optimizer.init(params), self.aggregator.init(),
                           self.work.init(params))

    def configure(self, state: ServerState, available: Sequence[str], round: int,
                  run_id: str, seed: int) -> tuple[list[Task], OpenRound]:
        """Fit tasks for this round's cohort, and the open round that will collect them."""
        cohort = self.sampler.sample(available, round, seed)
        layer_cfg = self.aggregator.client_config(state.aggregator_state, round)
        cfg = {**self.client_config, "work": self.work.name, "seed": derive_seed(seed, "client")}
        configs = {cid: cfg for cid in cohort}
        if self.stragglers is not None:
            configs = self.stragglers.apply(configs, round, seed)
        params = self.work.task_params(state.work_state, state.params)
        model_spec = spec_of(state.params)
        update_spec = self.work.update_spec(model_spec)
        encoded = self.aggregator.encoded_spec(update_spec)
        expects = expected_reply(encoded, update_spec)
        tasks = [Task(run_id, round, state.version, TaskKind.FIT, cid, params, c, layer_cfg,
                      expects) for cid, c in configs.items()]
        acc = open_accumulator(self.aggregator, model_spec, self.work.aux_spec(model_spec))
        return tasks, OpenRound(round, state.version, frozenset(configs), encoded, acc,
                                len(available))

    def accept(self, open_round: OpenRound, reply: Reply) -> Rejection | None:
        """Validate a reply and fold it into the accumulator, or say why not."""
        try:
            self._validate(open_round, reply)
            if reply.error is None:
                self.admission.check_fit(reply, self.aggregator)
        except ProtocolError as e:
            rejection = Rejection.of(reply, e)
            first_answer = reply.client_id not in open_round.answered
            if reply.client_id in open_round.cohort and first_answer:
                open_round.rejected.append(rejection)
            return rejection
        refused = fold_into(self.aggregator, open_round.accumulator, reply)
        if refused is not None:
            open_round.rejected.append(refused)
            return refused
        open_round.received.append(reply.client_id)
        open_round.client_metrics[reply.client_id] = dict(reply.metrics)
        open_round.num_examples[reply.client_id] = reply.num_examples
        return None

    def ready(self, open_round: OpenRound) -> bool:
        return open_round.answered >= open_round.cohort

    def commit(self, state: ServerState, open_round: OpenRound) -> tuple[ServerState, dict]:
        """Finalize the aggregate and apply the server optimizer: the new global model.

        Raises:
            AggregationError: fewer accepted replies than `min_replies`; nothing is applied.
        """
        if len(open_round.received) < self.min_replies:
            raise AggregationError(
                f"round {open_round.round}: {len(open_round.received)} accepted replies, "
                f"need {self.min_replies}; rejected: {[r.client_id for r in open_round.rejected]}")
        agg_state, aggregate, agg_metrics = self.aggregator.finalize(
            state.aggregator_state, open_round.accumulator)
        ids = open_round.received
        self._check_total_weight(agg_metrics, [open_round.num_examples[c] for c in ids])
        pseudo_grad, work_state, work_metrics = self.work.apply(
            state.work_state, aggregate, len(ids), open_round.population)
        step, opt_state = self.optimizer.update(pseudo_grad, state.optimizer_state, state.params)
        new = replace(state, params=apply_step(state.params, step), version=state.version + 1,
                      optimizer_state=opt_state, aggregator_state=agg_state,
                      work_state=work_state)
        fit = weighted_mean([open_round.client_metrics[c] for c in ids],
                            [open_round.num_examples[c] for c in ids])
        metrics = {"client_work": {**fit, **work_metrics}, "aggregator": agg_metrics,
                   "server_opt": {"update_norm": global_norm(step)}}
        return new, metrics

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
        cfg = {**self.client_config, "final": final}
        return [Task(run_id, round, state.version, TaskKind.EVALUATE, cid, state.params, cfg)
                for cid in sorted(clients)]

    def _validate(self, open_round: OpenRound, reply: Reply) -> None:
        if reply.client_id not in open_round.cohort:
            raise UnknownClient(f"reply from '{reply.client_id}', which was not asked in round "
                                f"{open_round.round}")
        if reply.round != open_round.round:
            raise WrongRound(f"reply from '{reply.client_id}' is for round {reply.round}, "
                             f"round {open_round.round} is open")
        if reply.client_id in open_round.answered:
            raise MalformedUpdate(f"'{reply.client_id}' already answered round {open_round.round}")
        if reply.error is None:
            if reply.update is None:
                raise MalformedUpdate(f"reply from '{reply.client_id}' carries no update")
            check_like(reply.update, open_round.spec, f"update from '{reply.client_id}'")
