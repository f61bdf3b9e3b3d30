"""Asynchronous strategies: the server folds updates in as they arrive, each institution
trains on the newest model it was given. Every update states the model version it was
trained from; its staleness τ is how many versions the model moved on since.

- FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
  AISTATS 2022): buffer K updates, each scaled by s(τ); then the server optimizer applies
  their (example-weighted) mean: θ ← θ - η_g mean_i s(τ_i) Δ_i.
- FedAsync (Xie et al. 2019): every update is applied at once by mixing,
  θ ← (1 - α_t) θ + α_t θ_i with α_t = α s(τ) and θ_i = θ_(version_i) - Δ_i the
  institution's model; the server keeps the last `max_staleness` versions for this.

Both stream updates through the same aggregation layers as synchronous rounds (clipping,
robust rules, compression); secure aggregation is not supported here (see the notes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fedsilo.aggregation.base import Accumulator, Layer
from fedsilo.algorithms.admission import Admission
from fedsilo.algorithms.base import Rejection, expected_reply, fold_into
from fedsilo.algorithms.staleness import Staleness
from fedsilo.core.messages import Reply, Signed, Task, TaskKind
from fedsilo.core.params import Params, ParamSpec, check_like, global_norm, spec_of
from fedsilo.core.rng import derive_seed
from fedsilo.errors import ConfigError, MalformedUpdate, ProtocolError, StaleUpdate, WrongRound
from fedsilo.evaluation.metrics import weighted_mean
from fedsilo.optim.base import OptState, ServerOptimizer, apply_step


@dataclass(frozen=True)
class AsyncState:
    """The server's state: the model, its version, optimizer and aggregator state, and (for
    FedAsync) the recent versions updates may have been trained from."""

    params: Params
    version: int
    optimizer_state: OptState
    aggregator_state: Any = None
    history: Mapping[int, Params] = field(default_factory=dict)


@dataclass
class Buffer:
    """Updates folded in since the last commit."""

    accumulator: Accumulator
    spec: ParamSpec
    received: list[str] = field(default_factory=list)
    staleness: list[int] = field(default_factory=list)
    trained_on: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    client_metrics: list[Mapping[str, float]] = field(default_factory=list)
    num_examples: list[int] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    signed: dict[str, Signed] = field(default_factory=dict)


@dataclass(frozen=True)
class AsyncStrategy:
    """FedBuff (`mixing` None) or FedAsync (`mixing` = α, buffer of 1)."""

    name: str
    client_config: Mapping[str, Any]
    aggregator: Layer
    optimizer: ServerOptimizer
    staleness: Staleness
    buffer_size: int
    mixing: float | None = None
    max_staleness: int | None = None
    admission: Admission = field(default_factory=Admission)  # the run's prepare-stage counts

    def init(self, params: Params) -> AsyncState:
        history = {0: dict(params)} if self.mixing is not None else {}
        return AsyncState(dict(params), 0, self.optimizer.init(params), self.aggregator.init(),
                          history)

    def task(self, state: AsyncState, client_id: str, count: int, run_id: str,
             seed: int) -> Task:
        """The `count`-th fit task of an institution, on the newest model."""
        cfg = {**self.client_config, "work": "local_training", "seed": derive_seed(seed, "client")}
        layer_cfg = self.aggregator.client_config(state.aggregator_state, state.version)
        spec = spec_of(state.params)
        return Task(run_id, count, state.version, TaskKind.FIT, client_id, state.params, cfg,
                    layer_cfg, expected_reply(self.aggregator.encoded_spec(spec), spec))

    def open(self, state: AsyncState) -> Buffer:
        spec = spec_of(state.params)
        return Buffer(self.aggregator.zero(spec), self.aggregator.encoded_spec(spec))

    def accept(self, state: AsyncState, buffer: Buffer, reply: Reply) -> Rejection | None:
        """Validate a reply, weigh it by its staleness and fold it into the buffer."""
        try:
            tau = self._validate(state, buffer, reply)
            if reply.error is None:
                self.admission.check_fit(reply, self.aggregator)
            # FedBuff: s(τ) Δ; FedAsync mixes with s(τ) at commit instead
            scale = self.staleness(tau) if self.mixing is None else 1.0
            rejection = fold_into(self.aggregator, buffer.accumulator, reply, scale)
        except ProtocolError as e:
            rejection = Rejection.of(reply, e)
        if rejection is not None:
            buffer.rejected.append(rejection)
            return rejection
        buffer.received.append(reply.client_id)
        buffer.staleness.append(tau)
        buffer.trained_on.append(reply.model_version)
        buffer.client_metrics.append(dict(reply.metrics))
        buffer.num_examples.append(reply.num_examples)
        return None

    def ready(self, buffer: Buffer) -> bool:
        return len(buffer.received) >= self.buffer_size

    def commit(self, state: AsyncState, buffer: Buffer) -> tuple[AsyncState, dict]:
        """Apply the buffered updates: the next model version."""
        agg_state, aggregate, agg_metrics = self.aggregator.finalize(state.aggregator_state,
                                                                     buffer.accumulator)
        if self.mixing is None:
            step, opt_state = self.optimizer.update(aggregate, state.optimizer_state,
                                                    state.params)
            params = apply_step(state.params, step)
        else:
            params, opt_state = self._mix(state, buffer, aggregate), state.optimizer_state
        version = state.version + 1
        history = dict(state.history)
        if self.mixing is not None:
            history[version] = params
            keep = version - (self.max_staleness or 0)
            history = {v: p for v, p in history.items() if v >= keep}
        new = replace(state, params=params, version=version, optimizer_state=opt_state,
                      aggregator_state=agg_state, history=history)
        metrics = {"client_work": weighted_mean(buffer.client_metrics, buffer.num_examples),
                   "aggregator": agg_metrics,
                   "staleness": {"mean": sum(buffer.staleness) / len(buffer.staleness),
                                 "max": float(max(buffer.staleness))},
                   "server_opt": {"update_norm": global_norm(
                       {n: params[n] - state.params[n] for n in params})}}
        return new, metrics

    def _mix(self, state: AsyncState, buffer: Buffer, delta: Params) -> Params:
        """θ ← (1 - α s(τ)) θ + α s(τ) (θ_τ - Δ)."""
        alpha = float(self.mixing or 0.0) * self.staleness(buffer.staleness[0])
        base = state.history[buffer.trained_on[0]]
        return {n: ((1 - alpha) * p + alpha * (base[n] - delta[n])).astype(p.dtype)
                for n, p in state.params.items()}

    def _validate(self, state: AsyncState, buffer: Buffer, reply: Reply) -> int:
        if reply.model_version > state.version:
            raise WrongRound(f"update from '{reply.client_id}' claims model version "
                             f"{reply.model_version}; the newest is {state.version}")
        tau = state.version - reply.model_version
        if self.max_staleness is not None and tau > self.max_staleness:
            raise StaleUpdate(f"update from '{reply.client_id}' was trained on version "
                              f"{reply.model_version}, the model is at version {state.version}: "
                              f"staleness {tau} > max_staleness {self.max_staleness}")
        if self.mixing is not None and reply.model_version not in state.history:
            raise StaleUpdate(f"update from '{reply.client_id}' was trained on version "
                              f"{reply.model_version}, which the server no longer keeps")
        if reply.error is None and reply.update is None:
            raise MalformedUpdate(f"reply from '{reply.client_id}' carries no update")
        if reply.update is not None:
            check_like(reply.update, buffer.spec, f"update from '{reply.client_id}'")
        return tau


def fedbuff(client_config: Mapping[str, Any], aggregator: Layer, optimizer: ServerOptimizer,
            *, buffer_size: int = 10, staleness: Staleness | None = None,
            max_staleness: int | None = None) -> AsyncStrategy:
    """FedBuff with a buffer of `buffer_size` updates."""
    if buffer_size < 1:
        raise ConfigError(f"fedbuff: buffer_size must be >= 1, got {buffer_size}")
    return AsyncStrategy("fedbuff", dict(client_config), aggregator, optimizer,
                         staleness or Staleness(), buffer_size, None, max_staleness)


def fedasync(client_config: Mapping[str, Any], aggregator: Layer, optimizer: ServerOptimizer,
             *, mixing: float = 0.6, staleness: Staleness | None = None,
             max_staleness: int = 16) -> AsyncStrategy:
    """FedAsync with mixing weight α = `mixing` (Xie et al. use 0.6) and a bounded history."""
    if not 0.0 < mixing <= 1.0:
        raise ConfigError(f"fedasync: mixing (α) must be in (0, 1], got {mixing}")
    if max_staleness < 0:
        raise ConfigError(f"fedasync: max_staleness must be >= 0, got {max_staleness}")
    return AsyncStrategy("fedasync", dict(client_config), aggregator, optimizer,
                         staleness or Staleness(), 1, float(mixing), max_staleness)
