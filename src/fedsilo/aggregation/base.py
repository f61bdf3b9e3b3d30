"""The aggregation-layer contract.

A layer has a client half and a server half:

- client half, runs inside the institution: `encode(update, num_examples, config, context)`
  (`context` is the institution's private scratch for this round: a secure sum keeps its
  keys there between stages);
- server half, streaming: `zero(spec)` makes one accumulator, `accumulate(acc, encoded)` folds
  each reply in as it arrives (memory O(model), not O(clients x model)), `merge` joins two
  accumulators, `finalize(state, acc) -> (state', aggregate, metrics)`.

`encoded_spec(spec)` tells the server what a valid client contribution looks like, so the
strategy can validate names, shapes, dtypes and finiteness before accumulating.
Wrappers take an `inner` layer of the same interface.

Side values: a client work may send values besides the model update (FedNova's a_i, SCAFFOLD's
Δc_i). They travel in the same dict, so they are weighted and (securely) summed like the
update, but the layers that change the update itself (DP clipping and noise) leave them
alone: the institution names them in its context (`declare_aux`), the server in the
accumulator (`Accumulator.aux`, set when a round opens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedsilo.core.params import Params, ParamSpec


@dataclass
class Accumulator:
    """Running server-side sum: named arrays plus how many contributions were folded in."""

    sums: Params
    count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    aux: frozenset[str] = frozenset()  # side values: summed, never clipped nor noised


AUX_CONTEXT = "aux"  # an institution's context: the names of its update's side values


def declare_aux(context: dict[str, Any], names: Iterable[str]) -> None:
    """Tell the client half of a stack which entries of this round's update are side values."""
    context[AUX_CONTEXT] = frozenset(names)


def aux_of(context: Mapping[str, Any]) -> frozenset[str]:
    """The side values declared in an institution's context (none if not declared)."""
    return frozenset(context.get(AUX_CONTEXT, ()))


def open_accumulator(layer: Layer, spec: ParamSpec, aux: ParamSpec) -> Accumulator:
    """`layer`'s accumulator for updates of `spec` plus the side values `aux`."""
    acc = layer.zero({**spec, **aux})
    acc.aux = frozenset(aux)
    return acc


class Layer(Protocol):
    """One layer of an aggregator stack."""

    @property
    def name(self) -> str: ...

    def init(self) -> Any: ...

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]: ...

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec: ...

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params: ...

    def zero(self, spec: ParamSpec) -> Accumulator: ...

    def accumulate(self, acc: Accumulator, encoded: Params) -> None: ...

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator: ...

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]: ...


class ServerOnly:
    """The client half of an innermost layer that does nothing inside the institution: no
    state, no per-round config, the update sent as it is (PlainSum, the robust rules)."""

    def init(self) -> Any:
        return None

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return {}

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return dict(spec)

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        return update


class Delegating:
    """A wrapper layer that hands every step to `inner` with the state unchanged; subclasses
    override the steps they change (WeightedMean: weighting; NormBound: bounding)."""

    inner: Layer

    def init(self) -> Any:
        return self.inner.init()

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return self.inner.client_config(state, round)

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return self.inner.encoded_spec(spec)

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        return self.inner.encode(update, num_examples, config, context)

    def zero(self, spec: ParamSpec) -> Accumulator:
        return self.inner.zero(spec)

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        self.inner.accumulate(acc, encoded)

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        return self.inner.merge(a, b)

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        return self.inner.finalize(state, acc)


def find_layer(layer: Any, wanted: Callable[[Any], bool]) -> Any | None:
    """The first layer of a stack (walking down `.inner`) that is `wanted`, if any."""
    while layer is not None:
        if wanted(layer):
            return layer
        layer = getattr(layer, "inner", None)
    return None


def find_staged(layer: Any) -> Any | None:
    """The layer of a stack that runs extra exchanges (pre_stages / post_stages), if any."""
    return find_layer(layer, lambda x: hasattr(x, "pre_stages"))
