"""FedBuff and FedAsync: a Strategy whose commit rule is K buffered updates or every update
(algorithms/commit.py), with any client work (FedAvg's local training, FedProx, SCAFFOLD,
FedNova) and any server optimizer.

- FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
  AISTATS 2022): buffer K updates, each scaled by s(τ); then the server optimizer applies
  their (example-weighted) mean: θ ← θ - η_g mean_i s(τ_i) Δ_i.
- FedAsync (Xie et al. 2019): every update is applied at once by mixing,
  θ ← (1 - α_t) θ + α_t θ_i with α_t = α s(τ) and θ_i = θ_(version_i) - Δ_i the
  institution's model; the server keeps the last `max_staleness` versions for this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation.base import Layer
from fedsilo.algorithms.base import PlainWork, Strategy, WorkRule
from fedsilo.algorithms.commit import CommitRule
from fedsilo.algorithms.sampling import UniformSampler
from fedsilo.algorithms.staleness import Staleness
from fedsilo.optim.base import ServerOptimizer


def fedbuff(client_config: Mapping[str, Any], aggregator: Layer, optimizer: ServerOptimizer,
            *, buffer_size: int = 10, staleness: Staleness | None = None,
            max_staleness: int | None = None, work: WorkRule | None = None,
            barrier: bool = False, name: str = "fedbuff") -> Strategy:
    """FedBuff with a buffer of `buffer_size` updates (`barrier`: everyone waits for the
    commit, which with K = N is synchronous FedAvg)."""
    rule = CommitRule(buffer_size, None, staleness or Staleness(), max_staleness, barrier)
    return _asynchronous(name, client_config, aggregator, optimizer, rule, work)


def fedasync(client_config: Mapping[str, Any], aggregator: Layer, optimizer: ServerOptimizer,
             *, mixing: float = 0.6, staleness: Staleness | None = None,
             max_staleness: int = 16, work: WorkRule | None = None,
             barrier: bool = False) -> Strategy:
    """FedAsync with mixing weight α = `mixing` (Xie et al. use 0.6) and a bounded history."""
    rule = CommitRule(1, float(mixing), staleness or Staleness(), max_staleness, barrier)
    return _asynchronous("fedasync", client_config, aggregator, optimizer, rule, work)


def _asynchronous(name: str, client_config: Mapping[str, Any], aggregator: Layer,
                  optimizer: ServerOptimizer, rule: CommitRule,
                  work: WorkRule | None) -> Strategy:
    return Strategy(name=name, sampler=UniformSampler(1.0, 1),
                    work=work or PlainWork("local_training"), client_config=dict(client_config),
                    aggregator=aggregator, optimizer=optimizer, rule=rule)
