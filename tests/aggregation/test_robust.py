"""Robust rules equal their definitions, resist outliers, and refuse what they cannot do."""

import numpy as np
import pytest

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.robust import CoordinateMedian, Krum, NormBound, TrimmedMean
from fedsilo.errors import AggregationError, ConfigError
from tests.aggregation.test_mean import aggregate, updates


def test_median_is_coordinatewise_median():
    ups = updates(5, seed=3)
    got = aggregate(CoordinateMedian(), ups, [1] * 5)
    for n in ("w", "b"):
        np.testing.assert_allclose(got[n], np.median([u[n] for u in ups], axis=0), rtol=1e-6)


def test_trimmed_mean_drops_the_extremes_per_coordinate():
    vals = [np.array([v], np.float32) for v in (1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0,
                                                7.0, 8.0)]
    ups = [{"x": v} for v in vals]
    got = aggregate(TrimmedMean(0.2), ups, [1] * 10)  # drop 2 each side: -50, 1, 8, 100
    assert got["x"][0] == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))


def test_krum_picks_an_honest_update_and_multikrum_averages_the_best():
    rng = np.random.default_rng(0)
    honest = [{"x": (1.0 + 0.01 * rng.normal(size=4)).astype(np.float32)} for _ in range(7)]
    bad = [{"x": np.full(4, -30.0, np.float32)}, {"x": np.full(4, 50.0, np.float32)}]
    ups = honest[:3] + bad + honest[3:]
    one = aggregate(Krum(2, 1), ups, [1] * 9)
    assert any(np.array_equal(one["x"], h["x"]) for h in honest)
    many = aggregate(Krum(2, None), ups, [1] * 9)  # m = K - f = 7: exactly the honest ones
    np.testing.assert_allclose(many["x"], np.mean([h["x"] for h in honest], axis=0), rtol=1e-6)


def test_krum_scores_are_sums_of_nearest_squared_distances():
    ups = [{"x": np.array([v], np.float64)} for v in (0.0, 1.0, 3.0, 7.0, 15.0)]
    # f = 1: each update's K - f - 2 = 2 nearest others
    want = [1 + 9, 1 + 4, 4 + 9, 16 + 36, 64 + 144]
    np.testing.assert_allclose(Krum(1).scores(ups), want)


def test_krum_refuses_too_few_updates_for_its_f():
    with pytest.raises(AggregationError, match="2f\\+3 = 7"):
        aggregate(Krum(2), updates(6), [1] * 6)


def test_norm_bound_clips_each_unweighted_update_before_the_weighted_mean():
    ups, ns = updates(4, seed=5), [10, 20, 30, 40]
    bound = 1.0
    got = aggregate(NormBound(bound, WeightedMean(PlainSum())), ups, ns)
    clipped = []
    for u in ups:
        norm = np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in u.values()))
        clipped.append({n: a * min(1.0, bound / norm) for n, a in u.items()})
    for n in ("w", "b"):
        want = sum(k * c[n] for c, k in zip(clipped, ns)) / sum(ns)
        np.testing.assert_allclose(got[n], want, rtol=1e-5, atol=1e-6)


def test_a_huge_update_moves_the_mean_but_not_the_robust_rules():
    ups = updates(9, seed=6)
    ups[4] = {n: a * 1e4 for n, a in ups[4].items()}
    mean = aggregate(WeightedMean(PlainSum(), weighted=False), ups, [1] * 9)
    for layer in (CoordinateMedian(), TrimmedMean(0.2), Krum(1, None)):
        got = aggregate(layer, ups, [1] * 9)
        assert np.abs(got["w"]).max() < 5 < np.abs(mean["w"]).max()


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multikrum"])
def test_robust_rules_cannot_sit_above_a_secure_sum(rule):
    with pytest.raises(ConfigError, match=f"'{rule}'.*secagg\\+"):
        build_aggregator({"layer": rule, "secure": {"protocol": "secagg+", "threshold": 2}})


def test_norm_bound_cannot_sit_above_a_secure_sum():
    with pytest.raises(ConfigError, match="norm_bound"):
        build_aggregator({"layer": "mean", "norm_bound": 1.0,
                          "secure": {"protocol": "secagg+", "threshold": 2}})


@pytest.mark.parametrize("make", [lambda: TrimmedMean(0.5), lambda: Krum(-1),
                                  lambda: NormBound(0.0, PlainSum())])
def test_bad_settings_are_refused(make):
    with pytest.raises(ConfigError):
        make()


def test_tolerances_are_stated():
    assert CoordinateMedian().tolerates(10) == 4
    assert TrimmedMean(0.2).tolerates(10) == 2
    assert Krum(3).tolerates(10) == 3 and Krum(5).tolerates(10) == 3
