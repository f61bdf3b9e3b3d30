"""The strategies fedsilo knows, by name: one line each.

A line gives the strategy's hyper-parameters (a pydantic model: the keys of the flat
[strategy] section it takes besides the common ones, their types, bounds and defaults), its
builder (`builder(client_config, **hyper, fraction=, min_clients=, aggregator=,
stragglers=) -> Strategy`; None for the asynchronous ones, which config/build.py's
`build_async_strategy` builds), the client half its institutions run, and whether it averages
uniformly ([strategy] weighted then defaults to false). The config schema, the strategy
builder and the institutions' dispatch of client work all read this table.

To add a strategy: a module algorithms/<name>.py with its `HyperParams` model, its builder,
its client half (a `ClientHalf`) and server rule if it has them, then one import and one line
below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.fedavg import (
    GRADIENT,
    LOCAL_TRAINING,
    ClientHalf,
    ClientWork,
    FedAvgParams,
    FedProxParams,
    FedSgdParams,
    HyperParams,
    fedavg,
    fedprox,
    fedsgd_from_config,
)
from fedsilo.algorithms.feddyn import FEDDYN_CLIENT, FedDynParams, feddyn
from fedsilo.algorithms.fednova import FEDNOVA_CLIENT, FedNovaParams, fednova
from fedsilo.algorithms.fedopt import (
    FedAdagradParams,
    FedAdamParams,
    FedAvgMParams,
    FedYogiParams,
    fedadagrad,
    fedadam,
    fedavgm,
    fedyogi,
)
from fedsilo.algorithms.scaffold import SCAFFOLD_CLIENT, ScaffoldParams, scaffold
from fedsilo.core.params import Params
from fedsilo.errors import ConfigError

Builder = Callable[..., Strategy]


class _AsyncParams(HyperParams):
    """The staleness keys of FedAsync and FedBuff (algorithms/staleness.py, commit.py)."""

    server_lr: float | None = Field(default=None, gt=0)  # FedBuff's step; FedAsync: unused
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    staleness_a: float = Field(default=0.5, ge=0)
    staleness_b: float = Field(default=4.0, ge=0)
    max_staleness: int | None = Field(default=None, ge=0)


class FedAsyncParams(_AsyncParams):
    mixing: float = Field(default=0.6, gt=0, le=1)


class FedBuffParams(_AsyncParams):
    buffer_size: int = Field(default=10, ge=1)


@dataclass(frozen=True)
class Registered:
    """One strategy: its hyper-parameters, builder, client half, and uniform means."""

    params: type[HyperParams]
    build: Builder | None
    client: ClientHalf
    uniform: bool = False


STRATEGY_REGISTRY: dict[str, Registered] = {
    "fedavg": Registered(FedAvgParams, fedavg, LOCAL_TRAINING),
    "fedsgd": Registered(FedSgdParams, fedsgd_from_config, GRADIENT),
    "fedadam": Registered(FedAdamParams, fedadam, LOCAL_TRAINING),
    "fedavgm": Registered(FedAvgMParams, fedavgm, LOCAL_TRAINING),
    "fedyogi": Registered(FedYogiParams, fedyogi, LOCAL_TRAINING),
    "fedadagrad": Registered(FedAdagradParams, fedadagrad, LOCAL_TRAINING),
    "fedprox": Registered(FedProxParams, fedprox, LOCAL_TRAINING),
    "scaffold": Registered(ScaffoldParams, scaffold, SCAFFOLD_CLIENT, uniform=True),
    "fednova": Registered(FedNovaParams, fednova, FEDNOVA_CLIENT),
    "fedasync": Registered(FedAsyncParams, None, LOCAL_TRAINING),
    "fedbuff": Registered(FedBuffParams, None, LOCAL_TRAINING),
    "feddyn": Registered(FedDynParams, feddyn, FEDDYN_CLIENT, uniform=True),
}

STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_REGISTRY)

# client work name (a fit task's config["work"]) -> what the institution runs
CLIENT_WORKS: dict[str, ClientHalf] = {r.client.name: r.client
                                       for r in STRATEGY_REGISTRY.values()}


def registered(name: str) -> Registered:
    """The registry's line for strategy `name`.

    Raises:
        ConfigError: no strategy of that name.
    """
    try:
        return STRATEGY_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"strategy '{name}' is unknown; known: "
                          f"{', '.join(STRATEGY_NAMES)}") from None


def get_client_work(name: str) -> ClientWork:
    """The client work a fit task names.

    Raises:
        ConfigError: no client work of that name.
    """
    try:
        return CLIENT_WORKS[name].run
    except KeyError:
        known = sorted(CLIENT_WORKS)
        raise ConfigError(f"client work '{name}' is unknown; known: {known}") from None


def aux_names(work: str, update: Params) -> frozenset[str]:
    """The entries of `work`'s `update` that are side values, not the model update."""
    half = CLIENT_WORKS.get(work)
    prefix = half.aux_prefix if half is not None else None
    return frozenset(n for n in update if prefix is not None and n.startswith(prefix))
