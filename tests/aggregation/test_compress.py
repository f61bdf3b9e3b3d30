"""Top-k sparsification with error feedback (aggregation/compress.py): the error-feedback
identity, the wire form, side values, what clipping below it bounds, a refusal under SecAgg+
and a real run on heart disease."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.aggregation.base import declare_aux
from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.compress import IDX, VAL, TopK
from fedsilo.aggregation.dp.clipping import Clip
from fedsilo.aggregation.mean import WEIGHT_KEY, WeightedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.config.schema import AggregationSection, load_config
from fedsilo.core.params import check_like, global_norm, spec_of
from fedsilo.errors import ConfigError, MalformedUpdate
from fedsilo.simulation.run import run_simulation
from fedsilo.transport import serde

EXAMPLE = Path(__file__).parents[2] / "examples" / "heart_disease" / "heart_disease.toml"
RNG = np.random.default_rng(3)


def integer_updates(rounds: int) -> list[dict[str, np.ndarray]]:
    """Updates of small integers: every sum below is exact in float64."""
    return [{"w": RNG.integers(-50, 50, size=(8, 5)).astype(np.float64),
             "b": RNG.integers(-50, 50, size=(5,)).astype(np.float64)} for _ in range(rounds)]


def sent_dense(layer: TopK, encoded: dict[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """What the server's half makes of one contribution (densified and summed alone)."""
    acc = layer.zero(spec)
    layer.accumulate(acc, encoded)
    return layer.finalize(layer.init(), acc)[1]


def test_error_feedback_sends_the_true_updates_less_the_final_residual_exactly():
    updates = integer_updates(7)
    spec = spec_of(updates[0])
    layer = TopK(0.1, PlainSum())
    total = {n: np.zeros(s.shape) for n, s in spec.items()}
    for u in updates:
        encoded = layer.encode({n: a.copy() for n, a in u.items()}, 1, {}, {"me": "a"})
        check_like(encoded, layer.encoded_spec(spec))
        for n, a in sent_dense(layer, encoded, spec).items():
            total[n] += a
    residual = layer.residual("a")
    truth = {n: sum(u[n] for u in updates) for n in spec}
    for n in spec:
        np.testing.assert_array_equal(total[n], truth[n] - residual[n])
        assert np.count_nonzero(residual[n]) > 0  # something was held back


def test_each_institution_keeps_its_own_residual():
    layer = TopK(0.1, PlainSum())
    u = integer_updates(1)[0]
    layer.encode(dict(u), 1, {}, {"me": "a"})
    assert layer.residual("b") == {}
    layer.encode(dict(u), 1, {}, {"me": "b"})
    np.testing.assert_array_equal(layer.residual("a")["w"], layer.residual("b")["w"])


def test_the_wire_form_is_indices_and_values_and_its_bytes_shrink():
    u = {"w": RNG.normal(size=(100, 10)).astype(np.float32), "b": np.ones(1, np.float32)}
    layer = TopK(0.05, WeightedMean(PlainSum()))
    encoded = layer.encode(dict(u), 3, {}, {"me": "a"})
    assert set(encoded) == {"w" + IDX, "w" + VAL, "b", WEIGHT_KEY}  # b: 1 value, sent dense
    assert encoded["w" + IDX].dtype == np.int32 and encoded["w" + IDX].shape == (50,)
    idx = encoded["w" + IDX]
    np.testing.assert_array_equal(encoded["w" + VAL], 3 * u["w"].reshape(-1)[idx])
    assert np.all(np.abs(u["w"]).reshape(-1)[idx].min() >= np.delete(
        np.abs(u["w"]).reshape(-1), idx).max())  # the largest magnitudes
    wire = sum(len(f) for f in serde.encode("reply", {}, encoded))
    dense = sum(len(f) for f in serde.encode("reply", {}, WeightedMean(PlainSum()).encode(
        dict(u), 3, {}, {})))
    assert wire < 0.15 * dense


def test_side_values_travel_dense_and_unchanged():
    u = {"w": RNG.normal(size=(40, 5)), "scaffold.c/w": RNG.normal(size=(40, 5)),
         "fednova.tau": np.array([7.0])}
    layer = TopK(0.1, PlainSum())
    context: dict = {"me": "a"}
    declare_aux(context, ["scaffold.c/w", "fednova.tau"])
    encoded = layer.encode(dict(u), 1, {}, context)
    np.testing.assert_array_equal(encoded["scaffold.c/w"], u["scaffold.c/w"])
    np.testing.assert_array_equal(encoded["fednova.tau"], u["fednova.tau"])
    assert set(layer.encoded_spec(spec_of(u))) == set(encoded)  # the server expects the same


@pytest.mark.parametrize("idx", [[3, 3], [5, 2], [-1, 4], [0, 400]])
def test_indices_out_of_range_repeated_or_unsorted_are_refused(idx):
    spec = {"w": spec_of({"w": np.zeros((40, 5))})["w"]}
    layer = TopK(0.01, PlainSum())
    acc = layer.zero(spec)
    bad = {"w" + IDX: np.array(idx, np.int32), "w" + VAL: np.ones(2)}
    with pytest.raises(MalformedUpdate, match="indices of 'w'"):
        layer.accumulate(acc, bad)


def test_compressing_before_clipping_keeps_what_is_sent_within_the_clip_norm():
    """The residual grows, yet each contribution stays within C: clip(top_k(u + e))."""
    layer = TopK(0.1, Clip(1.0, WeightedMean(PlainSum(), weighted=False)))
    spec = spec_of(integer_updates(1)[0])
    for u in integer_updates(5):
        sent = sent_dense(layer, layer.encode(dict(u), 1, layer.client_config(
            layer.init(), 1), {"me": "a"}), spec)
        assert global_norm(sent) <= 1.0 + 1e-12
    assert global_norm(layer.residual("a")) > 10.0


def test_topk_is_refused_under_secagg_plus():
    with pytest.raises(ConfigError, match="'topk' sends each update as indices and values, "
                                          "and the secure sum's masks make every coordinate"):
        build_aggregator({"layers": [{"kind": "topk", "fraction": 0.1}, {"kind": "mean"},
                                     {"kind": "secagg+", "threshold": 2}]})


def test_a_heart_disease_run_with_topk_trains():
    cfg = load_config(EXAMPLE)
    run = cfg.run.model_copy(update={"compare": False})

    def accuracy(layers):
        result = run_simulation(cfg.model_copy(update={
            "run": run, "aggregation": AggregationSection(layers=layers)}), write=False)
        return result.final["accuracy"], result.history.events[-1].metrics["aggregator"]

    plain, _ = accuracy(None)
    sparse, metrics = accuracy([{"kind": "topk", "fraction": 0.2}])
    assert metrics["topk_sent_fraction"] < 0.3  # it did send a fraction of the weights
    assert sparse > 0.7 and sparse >= plain - 0.03
