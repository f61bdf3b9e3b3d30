import numpy as np
import pytest

from fedsilo.aggregation import WEIGHT_KEY, PlainSum, WeightedMean
from fedsilo.core.params import spec_of
from fedsilo.errors import AggregationError, MalformedUpdate


def updates(k, seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": rng.normal(size=(4, 3)).astype(np.float32),
             "b": rng.normal(size=3).astype(np.float32)} for _ in range(k)]


def aggregate(layer, ups, ns):
    acc = layer.zero(spec_of(ups[0]))
    for u, n in zip(ups, ns):
        layer.accumulate(acc, layer.encode(u, n, {}, {}))
    return layer.finalize(layer.init(), acc)[1]


def test_weighted_mean_equals_definition():
    ups, ns = updates(5), [10, 1, 300, 7, 42]
    got = aggregate(WeightedMean(PlainSum()), ups, ns)
    for name in ("w", "b"):
        want = sum(n * u[name].astype(np.float64) for u, n in zip(ups, ns)) / sum(ns)
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7)
    assert got["w"].dtype == np.float32 and WEIGHT_KEY not in got


def test_unweighted_mean_is_plain_average():
    ups = updates(3, seed=1)
    got = aggregate(WeightedMean(PlainSum(), weighted=False), ups, [1, 100, 1000])
    np.testing.assert_allclose(got["b"], np.mean([u["b"] for u in ups], axis=0), rtol=1e-6)


def test_merge_of_partial_accumulators_equals_one_pass():
    layer, ups, ns = WeightedMean(PlainSum()), updates(6, seed=2), [3, 1, 4, 1, 5, 9]
    spec = spec_of(ups[0])
    a, b = layer.zero(spec), layer.zero(spec)
    for i, (u, n) in enumerate(zip(ups, ns)):
        layer.accumulate(a if i % 2 else b, layer.encode(u, n, {}, {}))
    merged = layer.finalize(None, layer.merge(a, b))[1]
    np.testing.assert_allclose(merged["w"], aggregate(layer, ups, ns)["w"], rtol=1e-6)


def test_accumulator_memory_is_one_model():
    layer, ups = WeightedMean(PlainSum()), updates(50)
    acc = layer.zero(spec_of(ups[0]))
    before = {n: a.ctypes.data for n, a in acc.sums.items()}
    for u in ups:
        layer.accumulate(acc, layer.encode(u, 1, {}, {}))
    assert {n: a.ctypes.data for n, a in acc.sums.items()} == before  # summed in place


def test_no_contribution_is_an_error():
    layer = WeightedMean(PlainSum())
    with pytest.raises(AggregationError, match="no contribution"):
        layer.finalize(None, layer.zero(spec_of(updates(1)[0])))


def test_non_positive_example_count_is_refused():
    with pytest.raises(MalformedUpdate, match="num_examples must be > 0"):
        WeightedMean(PlainSum()).encode(updates(1)[0], 0, {}, {})
