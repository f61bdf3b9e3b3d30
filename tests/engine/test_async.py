"""Asynchronous FL: staleness functions, FedAsync's and FedBuff's update rules, equivalence
with synchronous FedAvg, the virtual clock, and refusal of too-stale updates."""

import dataclasses

import numpy as np
import pytest

from fedsilo.algorithms.asynchronous import fedasync, fedbuff
from fedsilo.algorithms.fedavg import default_aggregator, fedavg
from fedsilo.algorithms.staleness import Staleness
from fedsilo.core.messages import Reply
from fedsilo.engine.clock import VirtualClock
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from fedsilo.optim import sgd
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import federation

SIZES = ((30, 1), (90, 2), (15, 3), (50, 4))
CFG = {"epochs": 2, "batch_size": 8, "lr": 0.1}


def datas():
    return [binary_data(n, s) for n, s in SIZES]


@pytest.mark.parametrize("kind,tau,want", [
    ("constant", 0, 1.0), ("constant", 9, 1.0),
    ("polynomial", 0, 1.0), ("polynomial", 3, 4 ** -0.5), ("polynomial", 8, 9 ** -0.5),
    ("hinge", 4, 1.0), ("hinge", 6, 1 / (0.5 * 2 + 1)), ("hinge", 14, 1 / (0.5 * 10 + 1))])
def test_staleness_functions_as_defined(kind, tau, want):
    assert Staleness(kind, a=0.5, b=4)(tau) == pytest.approx(want)


def test_staleness_rejects_bad_settings():
    with pytest.raises(ConfigError, match="staleness"):
        Staleness("exponential")


def test_fedbuff_with_k_equal_n_and_no_delays_is_synchronous_fedavg():
    sync = fedavg(CFG)
    transport, clients = federation(datas(), sync, seed=1)
    initial = clients["c0"].trainer.initial_params()
    want = train(sync, transport, initial, RunSettings("r", 3, rounds=4))
    buff = fedbuff(CFG, default_aggregator(), sgd(1.0), buffer_size=4,
                   staleness=Staleness("polynomial"))
    transport, _ = federation(datas(), sync, seed=1)
    got = train(buff, transport, initial, RunSettings("r", 3, rounds=4),
                VirtualClock(seconds_per_example=0.0))
    for n in initial:
        np.testing.assert_array_equal(got.params[n], want.params[n])
    assert [e.metrics["staleness"]["max"] for e in got.events] == [0.0] * 4


def test_barrier_mode_is_synchronous_fedavg_in_simulated_time():
    """With the barrier, everyone waits for the slowest: FedAvg's parameters, and each round
    takes the slowest institution's time."""
    sync = fedavg(CFG)
    transport, clients = federation(datas(), sync, seed=1)
    initial = clients["c0"].trainer.initial_params()
    want = train(sync, transport, initial, RunSettings("r", 3, rounds=3))
    clock = VirtualClock(seconds_per_example=0.01, speeds={"c1": 0.2})
    transport, _ = federation(datas(), sync, seed=1)
    got = train(fedbuff(CFG, default_aggregator(), sgd(1.0), buffer_size=4, barrier=True),
                transport, initial, RunSettings("r", 3, 3), clock)
    for n in initial:
        np.testing.assert_allclose(got.params[n], want.params[n], rtol=1e-6, atol=1e-7)
    slowest = 2 * 90 * 0.01 / 0.2  # c1: 2 epochs x 90 rows at a fifth of the speed
    assert [e.metrics["clock"]["time"] for e in got.events] == pytest.approx(
        [slowest, 2 * slowest, 3 * slowest])


def _reply(strategy, cid, version, delta, n=10):
    """A reply as an institution would send it: the update through the layers' client half."""
    encoded = strategy.aggregator.encode(dict(delta), n, {}, {})
    return Reply(f"r/{cid}", cid, 1, version, n, encoded, {})


def _one_param_state(strategy, value=1.0):
    return strategy.init({"w": np.array([value, value], np.float64)})


def test_fedasync_mixes_the_institution_model_with_staleness_weight():
    strategy = fedasync({}, default_aggregator(), sgd(1.0), mixing=0.6,
                        staleness=Staleness("polynomial", a=0.5), max_staleness=5)
    state = _one_param_state(strategy, 1.0)
    for step in (0.5, 0.25):  # two fresh commits: versions 1, 2
        buf = strategy.open(state)
        assert strategy.accept(state, buf, _reply(strategy, "a", state.version,
                                                  {"w": np.full(2, step)})) is None
        state, _ = strategy.commit(state, buf)
    theta_0 = 1.0
    theta_1 = 0.4 * theta_0 + 0.6 * (theta_0 - 0.5)
    theta_2 = 0.4 * theta_1 + 0.6 * (theta_1 - 0.25)
    np.testing.assert_allclose(state.params["w"], theta_2)
    buf = strategy.open(state)  # an update trained on version 0 arrives: staleness 2
    strategy.accept(state, buf, _reply(strategy, "b", 0, {"w": np.full(2, 0.1)}))
    state, metrics = strategy.commit(state, buf)
    alpha = 0.6 * 3 ** -0.5
    np.testing.assert_allclose(state.params["w"],
                               (1 - alpha) * theta_2 + alpha * (theta_0 - 0.1))
    assert metrics["staleness"]["max"] == 2


def test_fedbuff_scales_each_update_by_its_staleness():
    strategy = fedbuff({}, default_aggregator(weighted=False), sgd(1.0), buffer_size=2,
                       staleness=Staleness("polynomial", a=1.0))
    state = _one_param_state(strategy, 0.0)
    state = dataclasses.replace(state, version=3)
    buf = strategy.open(state)
    strategy.accept(state, buf, _reply(strategy, "a", 3, {"w": np.full(2, 1.0)}))   # τ = 0: s = 1
    strategy.accept(state, buf, _reply(strategy, "b", 0, {"w": np.full(2, 1.0)}))   # τ = 3: s = 1/4
    assert strategy.ready(buf)
    state, _ = strategy.commit(state, buf)
    np.testing.assert_allclose(state.params["w"], -(1.0 + 0.25) / 2)
    assert state.version == 4


def test_an_update_beyond_max_staleness_is_refused_with_the_reason():
    strategy = fedbuff({}, default_aggregator(), sgd(1.0), buffer_size=1, max_staleness=2)
    state = dataclasses.replace(_one_param_state(strategy), version=7)
    buf = strategy.open(state)
    rejection = strategy.accept(state, buf, _reply(strategy, "slow", 4, {"w": np.ones(2)}))
    assert rejection is not None and rejection.code == "stale_update"
    assert "trained on version 4" in rejection.reason and "max_staleness 2" in rejection.reason
    assert not buf.received
    future = strategy.accept(state, buf, _reply(strategy, "liar", 9, {"w": np.ones(2)}))
    assert future is not None and future.code == "wrong_round"
    bad = strategy.accept(state, buf, _reply(strategy, "nan", 7, {"w": np.array([np.nan, 1.0])}))
    assert bad is not None and bad.code == "malformed_update"


def test_a_slow_institution_does_not_hold_the_others_back():
    clock = VirtualClock(seconds_per_example=0.01, speeds={"c1": 0.2}, delay="exponential",
                         delay_mean=0.05, seed=4)
    sync = fedavg(CFG)

    def run():
        transport, clients = federation(datas(), sync, seed=1)
        initial = clients["c0"].trainer.initial_params()
        strategy = fedbuff(CFG, default_aggregator(), sgd(1.0), buffer_size=2)
        return train(strategy, transport, initial, RunSettings("r", 3, 12), clock)

    got = run()
    contributions = [c for e in got.events for c in e.participants]
    assert contributions.count("c1") < contributions.count("c2") / 3
    assert got.virtual_time < 12 / 2 * (2 * 90 * 0.01 / 0.2)  # far less than waiting for c1
    again = run()  # deterministic timeline
    assert [e.metrics["clock"]["time"] for e in again.events] == [
        e.metrics["clock"]["time"] for e in got.events]
    stale = [e.metrics["staleness"]["max"] for e in got.events]
    assert max(stale) >= 1
