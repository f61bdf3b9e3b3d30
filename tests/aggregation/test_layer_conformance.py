"""Per-layer conformance, in TensorFlow Federated's style: each wrapper layer is stacked on a
sentinel inner layer (SumPlusOne: a plain sum that adds 1 to every entry when it finalizes),
so the result shows that the wrapper hands every step to its inner layer exactly once and in
order; and every layer gives the same result whether the contributions are folded into one
accumulator or into two that are merged (the streaming contract)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedsilo.aggregation.base import Accumulator, Layer
from fedsilo.aggregation.compress import TopK
from fedsilo.aggregation.dp.clipping import Clip
from fedsilo.aggregation.dp.noise import GaussianNoise
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.robust import CoordinateMedian, NormBound, TrimmedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.core.params import ArraySpec, Params, ParamSpec

SPEC: ParamSpec = {"w": ArraySpec((3,), np.dtype(np.float64)),
                   "b": ArraySpec((1,), np.dtype(np.float64))}
UPDATES = [{"w": np.array([1.0, 2.0, 3.0]), "b": np.array([0.5])},
           {"w": np.array([-1.0, 0.0, 4.0]), "b": np.array([1.5])},
           {"w": np.array([2.0, 2.0, -2.0]), "b": np.array([-0.5])}]
EXAMPLES = [10, 30, 60]


class SumPlusOne(PlainSum):
    """The sentinel: a plain sum whose finalize adds 1 to every entry."""

    name = "sum_plus_one"

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        state, sums, metrics = super().finalize(state, acc)
        return state, {n: s + 1.0 for n, s in sums.items()}, metrics


def aggregate(layer: Layer, split: int | None = None) -> Params:
    """Encode every update (each with its own context), fold them in (into two accumulators
    merged at `split`, if given) and finalize."""
    state = layer.init()
    config = layer.client_config(state, 1)
    encoded = [layer.encode({n: a.copy() for n, a in u.items()}, n, config,
                            {"me": f"i{k}", "round": 1})
               for k, (u, n) in enumerate(zip(UPDATES, EXAMPLES))]
    if split is None:
        acc = layer.zero(SPEC)
        for e in encoded:
            layer.accumulate(acc, e)
    else:
        first, second = layer.zero(SPEC), layer.zero(SPEC)
        for e in encoded[:split]:
            layer.accumulate(first, e)
        for e in encoded[split:]:
            layer.accumulate(second, e)
        acc = layer.merge(first, second)
    return layer.finalize(state, acc)[1]


def mean_plus_one(updates: list[Params]) -> Params:
    """What WeightedMean(SumPlusOne) gives for `updates`: (Σ n_i u_i + 1) / (Σ n_i + 1)."""
    total = sum(EXAMPLES) + 1.0
    return {name: (sum(n * u[name] for n, u in zip(EXAMPLES, updates)) + 1.0) / total
            for name in SPEC}


def assert_params(found: Params, expected: Params) -> None:
    for name in SPEC:
        np.testing.assert_allclose(found[name], expected[name], rtol=1e-12)


def test_weighted_mean_hands_its_sum_to_the_inner_layer_once():
    """(Σ n_i u_i + 1) / (Σ n_i + 1): the weight is summed by the inner layer like the rest."""
    assert_params(aggregate(WeightedMean(SumPlusOne())), mean_plus_one(UPDATES))


def test_a_clip_that_does_not_bind_is_the_inner_layer():
    """A norm far above every update's: Clip(WeightedMean(SumPlusOne)) equals the mean alone."""
    np.testing.assert_equal(aggregate(Clip(1e6, WeightedMean(SumPlusOne()))),
                            aggregate(WeightedMean(SumPlusOne())))


def test_a_clip_that_binds_scales_each_update_to_the_bound():
    """Norm 1: each update is scaled to norm at most 1 before weighting (the sentinel's +1 is
    applied once, after the sum)."""
    clipped = []
    for u in UPDATES:
        norm = float(np.sqrt(sum(np.sum(a**2) for a in u.values())))
        clipped.append({n: a * min(1.0, 1.0 / norm) for n, a in u.items()})
    assert_params(aggregate(Clip(1.0, WeightedMean(SumPlusOne()))), mean_plus_one(clipped))


def test_zero_noise_is_the_inner_layer():
    np.testing.assert_equal(aggregate(GaussianNoise(0.0, WeightedMean(SumPlusOne()))),
                            aggregate(WeightedMean(SumPlusOne())))


def test_a_norm_bound_that_does_not_bind_is_the_inner_layer():
    np.testing.assert_equal(aggregate(NormBound(1e6, WeightedMean(SumPlusOne()))),
                            aggregate(WeightedMean(SumPlusOne())))


def test_robust_rules_follow_their_definitions():
    stacked = {n: np.stack([u[n] for u in UPDATES]) for n in SPEC}
    median = aggregate(CoordinateMedian())
    for name in SPEC:
        np.testing.assert_allclose(median[name], np.median(stacked[name], axis=0))
    trimmed = aggregate(TrimmedMean(0.34))  # drops the lowest and the highest of three
    for name in SPEC:
        np.testing.assert_allclose(trimmed[name], np.median(stacked[name], axis=0))


def test_a_topk_that_keeps_everything_is_the_inner_layer():
    np.testing.assert_equal(aggregate(TopK(1.0, WeightedMean(SumPlusOne()))),
                            aggregate(WeightedMean(SumPlusOne())))


def test_a_topk_that_binds_sends_each_updates_largest_coordinate():
    """Fraction 0.3: k = 1 of w's 3 values (b, one value, travels dense); the sentinel's +1 is
    applied once, after the densified sum. The third update's |values| tie: any one of them
    is its largest."""
    found = aggregate(TopK(0.3, WeightedMean(SumPlusOne())))
    candidates = []
    for third in range(3):
        sparse = []
        for i, u in enumerate(UPDATES):
            keep = third if i == 2 else int(np.argmax(np.abs(u["w"])))
            w = np.zeros(3)
            w[keep] = u["w"][keep]
            sparse.append({"w": w, "b": u["b"]})
        candidates.append(mean_plus_one(sparse))
    assert any(all(np.allclose(found[n], c[n], rtol=1e-12) for n in SPEC) for c in candidates)


LAYERS: dict[str, Callable[[], Layer]] = {
    "sum": PlainSum,
    "mean": lambda: WeightedMean(PlainSum()),
    "uniform mean": lambda: WeightedMean(PlainSum(), weighted=False),
    "clip(mean)": lambda: Clip(1.0, WeightedMean(PlainSum())),
    "noise 0 (mean)": lambda: GaussianNoise(0.0, WeightedMean(PlainSum())),
    "norm bound(mean)": lambda: NormBound(2.0, WeightedMean(PlainSum())),
    "median": CoordinateMedian,
    "trimmed mean": lambda: TrimmedMean(0.34),
    "topk(mean)": lambda: TopK(0.3, WeightedMean(PlainSum())),
    "topk(trimmed mean)": lambda: TopK(0.3, TrimmedMean(0.34)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("split", [1, 2])
def test_folding_into_two_accumulators_and_merging_changes_nothing(name, split):
    whole = aggregate(LAYERS[name]())
    merged = aggregate(LAYERS[name](), split)
    for key in SPEC:
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-12, atol=1e-15)
