"""Differential privacy: noise of the configured standard deviation, clipping bounds every
update, the accountant equals dp-accounting called directly, the budget stops at the right
round, and a membership-inference attack gains less with DP on."""

from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import rdp
from scipy import stats

from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.dp.accountant import Accountant
from fedsilo.aggregation.dp.clipping import Clip
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.client.factory import make_trainer
from fedsilo.config.build import build_schema, model_spec
from fedsilo.config.schema import load_config, parse_config
from fedsilo.core.params import global_norm, spec_of
from fedsilo.data.prepare import federated_preprocessor, local_data, split_institutions
from fedsilo.errors import ConfigError, PrivacyBudgetExhausted
from fedsilo.simulation.institutions import load_tables
from fedsilo.simulation.run import run_simulation
from tests.conftest import EXAMPLES

D = 200_000  # coordinates: enough for a tight test of the standard deviation


def privacy(mode="central", z=1.5, clip=0.7, **extra):
    return {"layer": "mean", "weighted": False, "privacy": {
        "mode": mode, "noise_multiplier": z, "clip_norm": clip, "delta": 1e-5,
        "min_contributors": extra.pop("m", 1), "bit_stddev": 0.0, **extra}}


def aggregate(layer, updates):
    acc = layer.zero(spec_of(updates[0]))
    for i, u in enumerate(updates):
        layer.accumulate(acc, layer.encode(u, 10, {"clip_norm": 0.7}, {"me": f"c{i}",
                                                                       "round": 1}))
    return layer.finalize(layer.init(), acc)


def std_interval(sample, confidence=0.999):
    """Confidence interval of the standard deviation (chi-square)."""
    n = sample.size
    s2 = sample.var(ddof=1)
    lo, hi = stats.chi2.ppf([(1 + confidence) / 2, (1 - confidence) / 2], n - 1)
    return np.sqrt((n - 1) * s2 / lo), np.sqrt((n - 1) * s2 / hi)


def test_central_noise_has_the_configured_standard_deviation():
    layer = build_aggregator(privacy(z=1.5, clip=0.7))
    zeros = [{"w": np.zeros(D, np.float64)} for _ in range(4)]
    _, mean, metrics = aggregate(layer, zeros)
    noise_on_sum = mean["w"] * 4  # the mean divides the noisy sum by 4 contributors
    lo, hi = std_interval(noise_on_sum)
    assert lo <= 1.5 * 0.7 <= hi
    assert abs(noise_on_sum.mean()) < 5 * 1.05 / np.sqrt(D)
    assert metrics["noise_stddev"] == pytest.approx(1.05)


def test_distributed_noise_shares_add_up_to_the_configured_deviation():
    layer = build_aggregator({**privacy(mode="distributed", z=2.0, clip=0.7, m=5)})
    _, mean, _ = aggregate(layer, [{"w": np.zeros(D)} for _ in range(5)])
    lo, hi = std_interval(mean["w"] * 5)
    assert lo <= 2.0 * 0.7 <= hi


def test_clipping_bounds_every_update_and_leaves_small_ones_alone():
    clip = Clip(1.0, WeightedMean(PlainSum(), weighted=False))
    rng = np.random.default_rng(0)
    for scale in (0.01, 0.5, 3.0, 1e4):
        update = {"a": rng.normal(size=(30, 4)) * scale, "b": rng.normal(size=7) * scale}
        out = clip.encode(update, 1, {"clip_norm": 1.0}, {})
        clipped = {k: v for k, v in out.items() if not k.startswith("__")}
        assert global_norm(clipped) <= 1.0 + 1e-9
        if global_norm(update) <= 1.0:
            assert all(np.array_equal(clipped[k], update[k]) for k in update)


def test_adaptive_clip_norm_follows_the_quantile_rule():
    clip = Clip(2.0, WeightedMean(PlainSum(), weighted=False), target_quantile=0.5,
                learning_rate=0.2)
    state = clip.init()
    spec = spec_of({"w": np.zeros(3)})
    acc = clip.zero(spec)
    for norm in (0.5, 1.0, 1.5, 3.0):  # three of four under the norm 2.0
        u = {"w": np.array([norm, 0.0, 0.0])}
        clip.accumulate(acc, clip.encode(u, 1, clip.client_config(state, 1), {}))
    state, _, metrics = clip.finalize(state, acc)
    assert metrics["unclipped_fraction"] == pytest.approx(0.75)
    assert state["norm"] == pytest.approx(2.0 * np.exp(-0.2 * (0.75 - 0.5)))


@pytest.mark.parametrize("q, z, rounds", [(1.0, 1.1, 10), (0.3, 0.8, 40), (0.05, 1.5, 200)])
def test_accountant_matches_dp_accounting_called_directly(q, z, rounds):
    ours = Accountant(z, q, 1e-6).epsilon(rounds)
    event = dpa.GaussianDpEvent(z)
    if q < 1:
        event = dpa.PoissonSampledDpEvent(q, event)
    direct = rdp.RdpAccountant()
    direct.compose(dpa.SelfComposedDpEvent(event, rounds))
    assert ours == pytest.approx(direct.get_epsilon(1e-6), rel=1e-12)


def heart(**privacy_update):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"compare": False}),
                                  "privacy": cfg.privacy.model_copy(update=privacy_update)})


def test_budget_stops_training_at_the_right_round():
    cfg = heart(mode="central", noise_multiplier=1.0, clip_norm=1.0, target_epsilon=20.0)
    expected = max(t for t in range(1, 16) if Accountant(1.0, 1.0, 1e-5).epsilon(t) <= 20.0)
    result = run_simulation(cfg, write=False)
    assert len(result.history.events) == expected < cfg.run.rounds
    eps = [e.metrics["aggregator"]["epsilon"] for e in result.history.events]
    assert eps == sorted(eps) and eps[-1] <= 20.0
    assert eps[-1] == pytest.approx(Accountant(1.0, 1.0, 1e-5).epsilon(expected))
    with pytest.raises(PrivacyBudgetExhausted, match="one round already costs"):
        run_simulation(heart(mode="central", noise_multiplier=0.5, target_epsilon=0.1),
                       write=False)


def test_distributed_dp_needs_secure_aggregation():
    raw = {"data": {"task": "binary", "target": "y"}, "model": {"kind": "mlp"},
           "privacy": {"mode": "distributed"}}
    with pytest.raises(ConfigError, match="needs secure aggregation"):
        parse_config(raw, Path("."))


def test_adaptive_clipping_checks_the_bit_noise():
    spec = privacy(z=2.0, target_quantile=0.5, bit_stddev=0.5)
    spec["privacy"]["bit_stddev"] = 0.5
    with pytest.raises(ConfigError, match="adaptive clipping needs"):
        build_aggregator(spec)


def membership_advantage(cfg, params):
    """Loss-threshold membership inference (Yeom et al. 2018): the best TPR - FPR of
    'member if loss < t' over all t, training rows against held-out rows."""
    tables = load_tables(cfg)
    schema = build_schema(cfg, next(iter(tables.values())))
    splits = split_institutions(tables, schema, cfg.data.test_fraction, cfg.run.seed)
    pre = federated_preprocessor(splits, schema)
    losses = {True: [], False: []}
    for s in splits:
        data = local_data(s, pre)
        trainer = make_trainer(model_spec(cfg), data)
        for member, x, y in ((True, data.x_train, data.y_train), (False, data.x_test,
                                                                   data.y_test)):
            p = np.clip(trainer.predict(params, x), 1e-7, 1 - 1e-7)
            losses[member].extend(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    m, o = np.array(losses[True]), np.array(losses[False])
    return max((m <= t).mean() - (o <= t).mean() for t in np.unique(np.concatenate([m, o])))


@pytest.mark.integration
def test_membership_inference_gains_less_with_dp():
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease_mlp.toml")
    cfg = cfg.model_copy(update={  # an overfitting recipe, so that there is something to leak
        "run": cfg.run.model_copy(update={"compare": False, "rounds": 30}),
        "client": cfg.client.model_copy(update={"lr": 0.05, "epochs": 3})})
    private = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={
        "mode": "central", "noise_multiplier": 5.0, "clip_norm": 0.5,
        "deterministic_noise": True})})
    leak_off = membership_advantage(cfg, run_simulation(cfg, write=False).history.params)
    leak_on = membership_advantage(private, run_simulation(private, write=False).history.params)
    assert leak_off > 0.08
    assert leak_on < leak_off - 0.04
