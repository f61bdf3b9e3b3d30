"""PlainSum: the innermost layer, a streaming in-place sum of client contributions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator
from fedsilo.core.params import Params, ParamSpec, zeros
from fedsilo.errors import AggregationError


class PlainSum:
    """Sums contributions into one preallocated accumulator (no per-reply temporaries)."""

    name = "sum"

    def init(self) -> None:
        return None

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return {}

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return dict(spec)

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any]) -> Params:
        return update

    def zero(self, spec: ParamSpec) -> Accumulator:
        return Accumulator(zeros(spec))

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        for name, total in acc.sums.items():
            np.add(total, encoded[name], out=total)
        acc.count += 1

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        for name, total in a.sums.items():
            np.add(total, b.sums[name], out=total)
        a.count += b.count
        return a

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        if acc.count == 0:
            raise AggregationError("sum: no contribution was accumulated this round")
        return state, acc.sums, {"contributions": float(acc.count)}
