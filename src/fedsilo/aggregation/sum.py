"""PlainSum: the innermost layer, a streaming in-place sum of client contributions."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator, ServerOnly
from fedsilo.core.params import Params, ParamSpec, zeros
from fedsilo.errors import AggregationError


def add_into(total: np.ndarray, x: np.ndarray) -> None:
    """total += x in place, on the calling thread. (BLAS axpy was faster on an idle machine
    by using every core, and 5-14x slower on a busy one, where its worker threads wait for
    cores the server's own threads hold; numpy's add is the same on both.)"""
    np.add(total, x, out=total, casting="same_kind")


class PlainSum(ServerOnly):
    """Sums contributions into one preallocated accumulator (no per-reply temporaries)."""

    name = "sum"
    needs_individual_updates = False
    commutes_with_secure_sum = True
    preserves_sensitivity = True  # each contribution added once, unscaled

    def zero(self, spec: ParamSpec) -> Accumulator:
        return Accumulator(zeros(spec))

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        for name, total in acc.sums.items():
            add_into(total, encoded[name])
        acc.count += 1

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        for name, total in a.sums.items():
            add_into(total, b.sums[name])
        a.count += b.count
        return a

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        if acc.count == 0:
            raise AggregationError("sum: no contribution was accumulated this round")
        return state, acc.sums, {"contributions": float(acc.count)}
