"""The declarative layer stack: short forms and layer lists build the same stacks, and one
checker (aggregation/build.py `check_stack`) refuses unsound ones naming both layers; the
config's [[aggregation.layers]] and its conflicts with the short forms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.aggregation.base import Layer
from fedsilo.aggregation.build import build_aggregator, check_stack, short_form_layers, walk
from fedsilo.aggregation.compress import TopK
from fedsilo.aggregation.dp.clipping import Clip
from fedsilo.aggregation.dp.noise import GaussianNoise
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.robust import MedianNormBound, NormBound, TrimmedMean
from fedsilo.aggregation.secure.secaggplus import SecAggPlus
from fedsilo.aggregation.sum import PlainSum
from fedsilo.cli.main import main
from fedsilo.config.build import aggregator_spec
from fedsilo.config.schema import load_config
from fedsilo.core.params import spec_of
from fedsilo.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "heart_disease" / "heart_disease.toml"
DP = {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0, "target_quantile": None,
      "clip_learning_rate": 0.2, "bit_stddev": 1.0, "delta": 1e-5, "min_contributors": 2,
      "deterministic": 7}
SECAGG = {"protocol": "secagg+", "threshold": 2}
RNG = np.random.default_rng(0)
UPDATES = [{"w": RNG.normal(size=(4, 3)), "b": RNG.normal(size=3)} for _ in range(5)]


def kinds(layer: Layer) -> list[type]:
    return [type(x) for x in walk(layer)]


def aggregate(layer: Layer) -> dict[str, np.ndarray]:
    state = layer.init()
    config = layer.client_config(state, 1)
    acc = layer.zero(spec_of(UPDATES[0]))
    for i, u in enumerate(UPDATES):
        layer.accumulate(acc, layer.encode(dict(u), 10 * (i + 1), config,
                                           {"me": f"i{i}", "round": 1}))
    return layer.finalize(state, acc)[1]


@pytest.mark.parametrize("spec, expected", [
    ({"layer": "mean"}, [MedianNormBound, WeightedMean, PlainSum]),
    ({"layer": "mean", "default_bound": False}, [WeightedMean, PlainSum]),
    ({"layer": "mean", "norm_bound": 2.0}, [NormBound, WeightedMean, PlainSum]),
    ({"layer": "trimmed_mean", "trim_fraction": 0.2}, [TrimmedMean]),
    ({"layer": "mean", "weighted": False, "privacy": DP},
     [Clip, WeightedMean, GaussianNoise, PlainSum]),
    ({"layer": "mean", "secure": SECAGG}, [WeightedMean, SecAggPlus]),
])
def test_short_forms_build_todays_stacks(spec, expected):
    assert kinds(build_aggregator(spec)) == expected


@pytest.mark.parametrize("spec", [
    {"layer": "mean"}, {"layer": "mean", "norm_bound": 2.0},
    {"layer": "trimmed_mean", "trim_fraction": 0.2}, {"layer": "krum", "byzantine": 1},
    {"layer": "mean", "weighted": False, "privacy": DP},
])
def test_a_short_form_and_its_layer_list_give_the_same_result_bit_for_bit(spec):
    short = aggregate(build_aggregator(spec))
    listed = aggregate(build_aggregator({"layers": short_form_layers(spec)}))
    for name in short:
        np.testing.assert_array_equal(listed[name], short[name])


@pytest.mark.parametrize("layers, words", [
    ([{"kind": "trimmed_mean", "trim_fraction": 0.2}, {"kind": "secagg+", "threshold": 2}],
     ["'trimmed_mean' needs each institution's update in the clear", "'secagg+'"]),
    ([{"kind": "norm_bound", "max_norm": 1.0}, {"kind": "mean"},
      {"kind": "secagg+", "threshold": 2}], ["'norm_bound'", "'secagg+'"]),
    ([{"kind": "topk", "fraction": 0.1}, {"kind": "mean"}, {"kind": "secagg+", "threshold": 2}],
     ["'topk'", "'secagg+'", "masks make every coordinate", "dense"]),
    ([{"kind": "clip", "norm": 1.0}, {"kind": "topk", "fraction": 0.1}, {"kind": "mean"},
      {"kind": "sum"}], ["'clip' above 'topk'", "error feedback", "compress, then clip"]),
    ([{"kind": "norm_bound", "max_norm": 1.0}, {"kind": "topk", "fraction": 0.1},
      {"kind": "mean"}, {"kind": "sum"}], ["'norm_bound' reads each contribution", "'topk'"]),
    ([{"kind": "clip", "norm": 1.0}, {"kind": "trimmed_mean"}, {**DP, "kind": "central_noise"},
      {"kind": "sum"}], ["'trimmed_mean' with differential privacy", "'central_noise'",
                         "sensitivity"]),
    ([{"kind": "mean"}, {**DP, "kind": "central_noise"}, {"kind": "sum"}],
     ["'central_noise' has no 'clip' above it"]),
    ([{"kind": "median"}, {"kind": "sum"}], ["'median' aggregates", "'sum'"]),
    ([{"kind": "mean"}], ["ends with 'mean'"]),
    ([{"kind": "zip"}], ["'zip' is unknown"]),
])
def test_unsound_or_malformed_stacks_are_refused_naming_both_layers(layers, words):
    with pytest.raises(ConfigError) as e:
        build_aggregator({"layers": layers})
    for w in words:
        assert w in str(e.value)


def test_todays_short_form_refusals_keep_their_meaning():
    with pytest.raises(ConfigError, match="'multikrum' needs each institution's update in the "
                                          "clear.*'secagg\\+'"):
        build_aggregator({"layer": "multikrum", "secure": SECAGG})
    with pytest.raises(ConfigError, match="'median' with differential privacy .*its "
                                          "sensitivity differs from the mean's"):
        build_aggregator({"layer": "median", "privacy": DP})
    with pytest.raises(ConfigError, match="'norm_bound' with differential privacy"):
        build_aggregator({"layer": "mean", "norm_bound": 1.0, "privacy": DP})


def test_sound_compositions_pass_the_check():
    check_stack(TopK(0.1, Clip(1.0, WeightedMean(GaussianNoise(1.0, PlainSum()), False))))
    check_stack(TopK(0.1, TrimmedMean(0.2)))
    check_stack(Clip(1.0, WeightedMean(SecAggPlus(2))))


def test_a_layer_list_must_hold_the_secure_sum_and_privacy_its_spec_states():
    """Site policies read the spec's "secure" and "privacy": a list that does not hold them
    as stated is refused."""
    with pytest.raises(ConfigError, match="'secure'"):
        build_aggregator({"layers": [{"kind": "mean"}, {"kind": "sum"}], "secure": SECAGG})
    noised = [{"kind": "clip", "norm": 1.0}, {"kind": "mean"}, {**DP, "kind": "central_noise"},
              {"kind": "sum"}]
    with pytest.raises(ConfigError, match="'privacy'"):
        build_aggregator({"layers": noised, "privacy": {**DP, "noise_multiplier": 0.1}})
    build_aggregator({"layers": noised, "privacy": DP})


# config ---------------------------------------------------------------------------------------
def config(tmp_path: Path, extra: str) -> Path:
    text = EXAMPLE.read_text().replace('"data/', f'"{EXAMPLE.parent}/data/')
    path = tmp_path / "run.toml"
    path.write_text(text + extra)
    return path


LAYERS = """
[[aggregation.layers]]
kind = "topk"
fraction = 0.2

[[aggregation.layers]]
kind = "trimmed_mean"
trim_fraction = 0.25
"""


def test_config_layers_become_the_spec_institutions_build_from(tmp_path):
    cfg = load_config(config(tmp_path, LAYERS))
    spec = aggregator_spec(cfg)
    assert spec == {"layers": [{"kind": "topk", "fraction": 0.2},
                               {"kind": "trimmed_mean", "trim_fraction": 0.25}]}
    layer = build_aggregator(spec)
    assert kinds(layer) == [TopK, TrimmedMean] and layer.inner.beta == 0.25


def test_config_layers_under_central_dp_get_a_clip_a_uniform_mean_and_noise(tmp_path):
    cfg = load_config(config(tmp_path, '\n[[aggregation.layers]]\nkind = "topk"\n'
                             'fraction = 0.1\n\n[privacy]\nmode = "central"\n'
                             'clip_norm = 0.5\n'))
    spec = aggregator_spec(cfg, 4)
    assert [e["kind"] for e in spec["layers"]] == ["topk", "clip", "mean", "central_noise",
                                                   "sum"]
    assert spec["layers"][1]["norm"] == 0.5 and spec["layers"][2]["weighted"] is False
    assert spec["privacy"]["mode"] == "central"
    assert kinds(build_aggregator(spec)) == [TopK, Clip, WeightedMean, GaussianNoise, PlainSum]


def test_short_form_configs_keep_their_spec(tmp_path):
    cfg = load_config(config(tmp_path, '\n[aggregation]\nrobust = "median"\n'))
    assert aggregator_spec(cfg) == {"layer": "median", "weighted": True, "trim_fraction": 0.1,
                                    "byzantine": 1, "select": None}


@pytest.mark.parametrize("extra, words", [
    ('\n[aggregation]\nrobust = "median"\n' + LAYERS,
     ["aggregation.robust = 'median'", "aggregation.layers", "'trimmed_mean'"]),
    ('\n[aggregation]\nnorm_bound = 3.0\n' + LAYERS,
     ["aggregation.norm_bound = 3.0", "aggregation.layers"]),
    ('\n[aggregation]\nsecure = "secagg+"\nthreshold = 2\n' + LAYERS,
     ["'topk'", "'secagg+'", "choose one"]),
    ('\n[[aggregation.layers]]\nkind = "topk"\nfracton = 0.1\n', ["unknown key 'fracton'"]),
    ('\n[[aggregation.layers]]\nkind = "topk"\nfraction = 2\n',
     ["'fraction' must be a number in (0, 1]"]),
])
def test_config_conflicts_exit_2_naming_both(tmp_path, capsys, extra, words):
    code = main(["run", str(config(tmp_path, extra)), "--quiet", "--output",
                 str(tmp_path / "results")])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 2
    for w in words:
        assert w in out


@pytest.mark.parametrize("extra, words", [
    ('\n[[aggregation.layers]]\nkind = "trimmed_mean"\n\n[privacy]\nmode = "central"\n',
     ["'trimmed_mean' with differential privacy"]),
    ('\n[[aggregation.layers]]\nkind = "clip"\nnorm = 0.5\n\n[privacy]\nmode = "central"\n',
     ["clip) norm = 0.5", "[privacy]"]),
    ('\n[[aggregation.layers]]\nkind = "mean"\nweighted = true\n\n[privacy]\n'
     'mode = "central"\n', ["weighted = true", "privacy.mode"]),
])
def test_config_layers_that_conflict_with_privacy_are_refused(tmp_path, extra, words):
    cfg = load_config(config(tmp_path, extra))
    with pytest.raises(ConfigError) as e:
        aggregator_spec(cfg, 4)
    for w in words:
        assert w in str(e.value)
