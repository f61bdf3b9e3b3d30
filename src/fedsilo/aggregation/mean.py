"""WeightedMean: weights applied by each client before the inner sum, divided out at the end.

Weighting on the client side (update * w, plus w itself as one more summed entry) is what lets a
secure sum sit underneath: the server only ever needs Σ w_i u_i and Σ w_i.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator, Delegating, Layer, find_layer
from fedsilo.core.params import ArraySpec, Params, ParamSpec
from fedsilo.errors import AggregationError, MalformedUpdate

WEIGHT_KEY = "__weight__"


class WeightedMean(Delegating):
    """Mean of updates weighted by example count (`weighted=True`) or uniform (`False`).

    Args:
        inner: the layer that sums the weighted contributions (PlainSum, or a secure sum).
        weighted: weight by `num_examples` (FedAvg) or give every client weight 1.
    """

    name = "mean"
    needs_individual_updates = False
    commutes_with_secure_sum = True  # weights applied in the institution, divided out of the sum
    preserves_sensitivity = True  # uniform weights; weights n_i scale it (build.check_stack)

    def __init__(self, inner: Layer, weighted: bool = True) -> None:
        self.inner = inner
        self.weighted = weighted

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return self.inner.encoded_spec({**spec, WEIGHT_KEY: ArraySpec((1,), np.dtype(np.float64))})

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        if num_examples <= 0:
            raise MalformedUpdate(f"mean: num_examples must be > 0, got {num_examples}")
        w = self.weight(num_examples)
        weighted = {n: np.asarray(u * w).astype(u.dtype, copy=False)  # 0-d stays an array
                    for n, u in update.items()}
        weighted[WEIGHT_KEY] = np.array([w], dtype=np.float64)
        return self.inner.encode(weighted, num_examples, config, context)

    def weight(self, num_examples: int) -> float:
        """The weight of a contribution of `num_examples` examples."""
        return float(num_examples) if self.weighted else 1.0

    def carries_weight_of(self, encoded: Params, num_examples: int) -> bool:
        """Whether a contribution carries the weight `num_examples` gives (True if it carries
        none in the clear, e.g. under a secure sum)."""
        sent = encoded.get(WEIGHT_KEY)
        return sent is None or (sent.shape == (1,) and float(sent[0]) == self.weight(num_examples))

    def zero(self, spec: ParamSpec) -> Accumulator:
        return self.inner.zero({**spec, WEIGHT_KEY: ArraySpec((1,), np.dtype(np.float64))})

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        state, sums, metrics = self.inner.finalize(state, acc)
        total = float(sums[WEIGHT_KEY][0])
        if not total > 0:
            raise AggregationError(f"mean: total weight is {total}; nothing to average")
        mean = {n: np.divide(s, total, out=s, casting="unsafe")  # in place: one model in memory
                for n, s in sums.items() if n != WEIGHT_KEY}
        return state, mean, {**metrics, "total_weight": total}


def rescaled(encoded: Params, factor: float) -> Params:
    """An encoded contribution times `factor`, its weight entry unchanged."""
    return {n: a if n == WEIGHT_KEY else (a * factor).astype(a.dtype)
            for n, a in encoded.items()}


def find_mean(layer: Any) -> WeightedMean | None:
    """The weighted mean of a stack, if it has one (the server derives each contribution's
    weight from it and the example count, instead of trusting the weight sent)."""
    found: WeightedMean | None = find_layer(layer, lambda x: isinstance(x, WeightedMean))
    return found
