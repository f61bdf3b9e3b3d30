"""What the server admits from an institution (algorithms/admission.py, data/plausible.py)
and the default bound (aggregation/robust.py MedianNormBound), at unit level: each rule
refuses what breaks it with a reason that names the rule and never the value, and lets an
honest reply through unchanged."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from fedsilo.aggregation import WEIGHT_KEY, PlainSum, WeightedMean
from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.robust import MedianNormBound, NormBound
from fedsilo.aggregation.secure.fixedpoint import FixedPoint
from fedsilo.aggregation.secure.secaggplus import SecAggPlus
from fedsilo.algorithms.admission import Admission, check_metrics
from fedsilo.algorithms.base import fold_into
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.messages import Reply
from fedsilo.core.params import spec_of
from fedsilo.data.plausible import check_statistics, plausible_test_rows
from fedsilo.data.prepare import pooled, split_institutions
from fedsilo.data.preprocessing import LocalStatistics
from fedsilo.data.schema import Schema
from fedsilo.errors import AggregationError, DataError, MalformedUpdate, ProtocolError

MEAN = WeightedMean(PlainSum())
UPDATE = {"w": np.array([0.5, -0.25], np.float32)}


def fit_reply(client="a", n=10, weight=None, metrics=None):
    encoded = MEAN.encode(UPDATE, n, {}, {})
    if weight is not None:
        encoded[WEIGHT_KEY] = np.array([weight], np.float64)
    return Reply(f"r/1/fit/{client}", client, 1, 0, n, encoded,
                 metrics if metrics is not None else {"train_loss": 0.3})


@pytest.mark.parametrize("metrics, words", [
    ({"accuracy": math.nan}, "metric 'accuracy' is not a finite number"),
    ({"accuracy": math.inf}, "metric 'accuracy' is not a finite number"),
    ({"x" * 100: 0.5}, "metric name is not 1-64 characters"),
    ({"acc uracy": 0.5}, "metric name is not 1-64 characters"),
    ({"accuracy": 1.5}, "metric 'accuracy' is outside [0.0, 1.0]"),
    ({"ditto_log_loss": -2.0}, "metric 'ditto_log_loss' is outside [0.0, inf]"),
    ({f"m{i}": 0.0 for i in range(65)}, "65 metrics, more than 64"),
])
def test_bad_metrics_are_refused_naming_the_rule_not_the_value(metrics, words):
    with pytest.raises(MalformedUpdate) as e:
        check_metrics(metrics, "evaluation from 'a'")
    assert words in str(e.value) and "1.5" not in str(e.value)


def test_honest_metrics_pass():
    check_metrics({"accuracy": 0.8, "log_loss": 0.4, "r2": -3.0, "train_loss": 1e6,
                   "finetuned_accuracy": 1.0, "dp_epsilon": 2.5}, "reply")


@pytest.mark.parametrize("reply, words", [
    (fit_reply(n=201), "claims more training examples than the 200 training rows"),
    (dataclasses.replace(fit_reply(), num_examples=0), "not a positive count"),
    (fit_reply(weight=1e12), "aggregation weight is not the one its example count gives"),
    (fit_reply(weight=-1e30), "aggregation weight is not the one its example count gives"),
    (fit_reply(client="late", n=301), "than the 300 of any institution"),
    (fit_reply(metrics={"train_loss": math.nan}), "not a finite number"),
])
def test_fit_replies_breaking_a_rule_are_refused(reply, words):
    admission = Admission({"a": 200, "b": 300}, {"a": 70, "b": 100})
    with pytest.raises(MalformedUpdate) as e:
        admission.check_fit(reply, MEAN)
    assert words in str(e.value)


def test_the_weight_is_the_one_the_example_count_gives():
    admission = Admission({"a": 200})
    admission.check_fit(fit_reply(n=200), MEAN)
    unweighted = WeightedMean(PlainSum(), weighted=False)
    honest = Reply("r/1/fit/a", "a", 1, 0, 200, unweighted.encode(UPDATE, 200, {}, {}))
    admission.check_fit(honest, unweighted)
    with pytest.raises(MalformedUpdate, match="aggregation weight"):
        admission.check_fit(fit_reply(n=200), unweighted)  # sends 200 where 1 is due
    hidden = WeightedMean(SecAggPlus(2, None, FixedPoint(24, 2.0**30)))
    admission.check_fit(fit_reply(weight=1e12), hidden)  # masked: checked on the total


def test_an_institution_refused_at_prepare_is_refused_in_every_round():
    admission = Admission({"a": 200}, {"a": 70}, {"b": "statistics: column 'x' ..."})
    for check in (lambda r: admission.check_fit(r, MEAN), admission.check_evaluation):
        with pytest.raises(ProtocolError, match="refused at the prepare stage"):
            check(fit_reply(client="b"))


def test_evaluation_counts_are_bounded_by_the_test_rows_reported():
    admission = Admission({"a": 200}, {"a": 70})
    ok = Reply("r/1/evaluate/a", "a", 1, 0, 70, metrics={"accuracy": 0.8})
    admission.check_evaluation(ok)
    with pytest.raises(MalformedUpdate, match="more test examples than the 70 test rows"):
        admission.check_evaluation(dataclasses.replace(ok, num_examples=10**15))


def test_a_weight_total_that_the_counts_do_not_give_aborts_the_round():
    """Under secure aggregation only the total weight is visible: one that is not the sum of
    the contributors' example counts aborts the round (here folded in directly, as a secure
    sum would reveal it)."""
    strategy = fedavg({"epochs": 1})
    state = strategy.init({"w": np.zeros(2, np.float32)})
    _, rnd = strategy.configure(state, ["a", "b"], 1, "r", 0)
    for reply in (fit_reply("a", 10), fit_reply("b", 20, weight=1e6)):
        assert fold_into(strategy.aggregator, rnd.accumulator, reply) is None
        rnd.received.append(reply.client_id)
        rnd.client_metrics.append({})
        rnd.num_examples.append(reply.num_examples)
    with pytest.raises(AggregationError, match="total aggregation weight"):
        strategy.commit(state, rnd)


# --- preprocessing statistics -------------------------------------------------------------

SCHEMA = Schema("y", "binary", ("x",), ("c",))


def honest_stats(rows=50):
    frame = pd.DataFrame({"x": np.arange(rows, dtype=float), "c": ["a", "b"] * (rows // 2),
                          "y": [0, 1] * (rows // 2)})
    return LocalStatistics.of(frame, SCHEMA)


@pytest.mark.parametrize("change, words", [
    (lambda s: {**s, "numeric": {"x": [50, math.nan, 10.0]}}, "column 'x' has a sum that is "
                                                                "not finite"),
    (lambda s: {**s, "numeric": {"x": [51, 1.0, 1.0]}}, "column 'x' counts more values"),
    (lambda s: {**s, "numeric": {"x": [50, 100.0, 1.0]}}, "sum of squares below"),
    (lambda s: {**s, "numeric": {"x": [50, 1e200, 1e300]}}, "sums beyond what 50 values"),
    (lambda s: {**s, "categories": {"c": {str(i): 1 for i in range(101)}}},
     "column 'c' has 101 levels, more than 100 (data.max_levels)"),
    (lambda s: {**s, "categories": {"c": {"a" * 201: 1}}}, "label longer than 200"),
    (lambda s: {**s, "categories": {"c": {"a": 60}}}, "add up to more than the rows"),
    (lambda s: {**s, "classes": {"0": 1, "1": 1, "2": 1}}, "3 classes, more than 2"),
    (lambda s: {**s, "numeric": {}}, "numeric columns differ from the declared ones"),
    (lambda s: {**s, "rows": -1}, "negative number of rows"),
])
def test_statistics_that_no_rows_could_give_are_refused(change, words):
    bad = LocalStatistics.from_dict(change(honest_stats().to_dict()))
    with pytest.raises(DataError) as e:
        check_statistics(bad, SCHEMA)
    assert words in str(e.value)


def test_honest_statistics_pass_and_the_level_cap_is_configurable():
    check_statistics(honest_stats(), SCHEMA)
    many = LocalStatistics.from_dict({**honest_stats().to_dict(),
                                      "categories": {"c": {str(i): 1 for i in range(30)}}})
    check_statistics(many, SCHEMA, max_levels=30)
    with pytest.raises(DataError, match="more than 29"):
        check_statistics(many, SCHEMA, max_levels=29)


def test_statistics_that_are_not_statistics_are_refused_without_echoing_them():
    with pytest.raises(DataError) as e:
        LocalStatistics.from_dict({**honest_stats().to_dict(), "rows": "secret-value"})
    assert "secret" not in str(e.value)
    with pytest.raises(DataError):
        LocalStatistics.from_dict({**honest_stats().to_dict(), "rows": math.inf})


def test_plausible_test_rows_admit_every_real_split_and_their_union():
    schema = Schema("y", "regression", ("x",))
    tables = {f"i{k}": pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.arange(n)})
              for k, n in enumerate((2, 3, 4, 10, 37, 300))}
    for fraction in (0.1, 0.25, 0.34, 0.5):
        splits = split_institutions(tables, schema, fraction, 0)
        for s in [*splits, pooled(splits)]:
            assert len(s.test) <= plausible_test_rows(len(s.train), fraction)
    assert plausible_test_rows(200, 0.25) < 10**15


# --- the default bound --------------------------------------------------------------------

def encoded(rng, scale, n):
    return MEAN.encode({"w": (rng.standard_normal(50) * scale).astype(np.float32)}, n, {}, {})


def aggregate(layer, updates):
    acc = layer.zero(spec_of({"w": np.zeros(50, np.float32)}))
    for u in updates:
        layer.accumulate(acc, u)
    return layer.finalize(layer.init(), acc)


def test_an_honest_round_is_the_plain_mean_bit_for_bit():
    rng = np.random.default_rng(0)
    updates = [encoded(rng, s, n) for s, n in ((1.0, 10), (3.5, 40), (0.8, 25), (1.2, 5))]
    _, plain, _ = aggregate(WeightedMean(PlainSum()), [dict(u) for u in updates])
    _, bounded, metrics = aggregate(MedianNormBound(WeightedMean(PlainSum())), updates)
    assert np.array_equal(plain["w"], bounded["w"])
    assert metrics["default_bounded"] == 0


def test_an_update_above_five_medians_is_scaled_down_to_that():
    rng = np.random.default_rng(1)
    honest = [encoded(rng, 1.0, 10) for _ in range(3)]
    norms = [float(np.linalg.norm(u["w"])) / 10 for u in honest]
    attacker = MEAN.encode({"w": np.full(50, 5.0, np.float32)}, 10, {}, {})
    _, out, metrics = aggregate(MedianNormBound(WeightedMean(PlainSum())),
                                [*honest, attacker])
    bound = 5 * float(np.median([*norms, np.sqrt(50) * 5.0]))
    assert metrics["default_bounded"] == 1 and metrics["default_bound"] == pytest.approx(bound)
    pulled = out["w"] - sum(u["w"] for u in honest) / 40
    assert np.linalg.norm(pulled) == pytest.approx(bound * 10 / 40, rel=1e-5)


def test_fewer_than_four_updates_are_not_bounded():
    rng = np.random.default_rng(2)
    updates = [encoded(rng, 1.0, 10), encoded(rng, 1.0, 10), encoded(rng, 100.0, 10)]
    _, _, metrics = aggregate(MedianNormBound(WeightedMean(PlainSum())), updates)
    assert "default_bounded" not in metrics


@pytest.mark.parametrize("spec, bounded", [
    ({"layer": "mean"}, True),
    ({"layer": "mean", "default_bound": False}, False),
    ({"layer": "mean", "norm_bound": 1.0}, False),
    ({"layer": "median"}, False),
    ({"layer": "mean", "secure": {"protocol": "secagg+", "threshold": 2}}, False),
])
def test_the_default_bound_sits_on_every_plain_mean(spec, bounded):
    layer = build_aggregator(spec)
    assert isinstance(layer, MedianNormBound) == bounded
    if spec.get("norm_bound"):
        assert isinstance(layer, NormBound)
