"""The server rejects bad replies with a reason, and keeps serving the other institutions."""

import dataclasses

import numpy as np
import pytest

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.messages import ErrorInfo
from fedsilo.data.local_data import LocalData
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import AggregationError
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import federation

CFG = {"epochs": 1, "batch_size": 8, "lr": 0.1}


def open_round(k=3):
    strategy = fedavg(CFG)
    transport, clients = federation([binary_data(30, i) for i in range(k)], strategy)
    state = strategy.init(clients["c0"].trainer.initial_params())
    tasks, rnd = strategy.configure(state, transport.clients(), 1, "run", 0)
    replies = {t.client_id: clients[t.client_id].handle(t) for t in tasks}
    return strategy, state, rnd, replies


def corrupt(reply, **changes):
    update = {**reply.update, **changes}
    return dataclasses.replace(reply, update=update)


@pytest.mark.parametrize("make_bad, code, words", [
    (lambda r: corrupt(r, **{"0.weight": np.zeros((2, 2), np.float32)}), "malformed_update",
     "shape"),
    (lambda r: corrupt(r, **{"0.bias": np.array([np.nan], np.float32)}), "malformed_update",
     "NaN"),
    (lambda r: corrupt(r, **{"0.bias": np.array([1.0])}), "malformed_update", "dtype"),
    (lambda r: dataclasses.replace(r, round=7), "wrong_round", "round 7"),
    (lambda r: dataclasses.replace(r, update=None), "malformed_update", "no update"),
])
def test_bad_reply_is_rejected_and_round_still_commits(make_bad, code, words):
    strategy, state, rnd, replies = open_round()
    bad = make_bad(replies["c1"])
    rejection = strategy.accept(state, rnd, bad)
    assert rejection is not None and rejection.code == code and words in rejection.reason
    assert strategy.accept(state, rnd, replies["c0"]) is None
    assert strategy.accept(state, rnd, replies["c2"]) is None
    assert strategy.ready(rnd)
    new, _ = strategy.commit(state, rnd)
    assert new.version == 1 and rnd.received == ["c0", "c2"]


def test_reply_from_institution_not_asked_is_rejected():
    strategy, state, rnd, replies = open_round()
    stranger = dataclasses.replace(replies["c0"], client_id="mallory")
    rejection = strategy.accept(state, rnd, stranger)
    assert rejection.code == "unknown_client" and "mallory" in rejection.reason
    assert rnd.received == [] and not strategy.ready(rnd)


def test_duplicate_reply_is_not_counted_twice():
    strategy, state, rnd, replies = open_round(k=2)
    assert strategy.accept(state, rnd, replies["c0"]) is None
    assert strategy.accept(state, rnd, replies["c0"]).code == "malformed_update"
    strategy.accept(state, rnd, replies["c1"])
    assert rnd.accumulator.count == 2


def test_client_error_is_recorded_not_aggregated():
    strategy, state, rnd, replies = open_round(k=2)
    failed = dataclasses.replace(replies["c1"], update=None,
                                 error=ErrorInfo("client_training_error", "disk full"))
    assert strategy.accept(state, rnd, failed).reason == "disk full"
    strategy.accept(state, rnd, replies["c0"])
    assert strategy.ready(rnd) and rnd.received == ["c0"]


def test_too_few_replies_aborts_and_changes_nothing():
    strategy = fedavg(CFG, min_clients=2)
    transport, clients = federation([binary_data(30, i) for i in range(2)], strategy)
    state = strategy.init(clients["c0"].trainer.initial_params())
    tasks, rnd = strategy.configure(state, transport.clients(), 1, "run", 0)
    strategy.accept(state, rnd, clients["c0"].handle(tasks[0]))
    with pytest.raises(AggregationError, match="1 accepted replies, need 2"):
        strategy.commit(state, rnd)
    assert state.version == 0


def test_institution_with_broken_data_fails_alone():
    """One institution's data has the wrong number of columns: its training raises inside
    the client, the reply carries the error, the others train and the run goes on."""
    good = [binary_data(30, i) for i in range(3)]
    broken = LocalData(np.ones((30, 4), np.float32), good[0].y_train, good[0].x_test,
                       good[0].y_test, "binary", 2)
    strategy = fedavg(CFG)
    transport, clients = federation([*good, broken], strategy)
    history = train(strategy, transport, clients["c0"].trainer.initial_params(),
                       RunSettings("r", 0, rounds=2))
    for event in history.events:
        assert event.participants == ("c0", "c1", "c2")
        assert "client_training_error" in event.rejected["c3"]
    assert history.state.version == 2



def test_round_with_too_few_valid_replies_is_skipped_and_the_run_goes_on():
    good = [binary_data(30, i) for i in range(2)]
    broken = LocalData(np.ones((30, 4), np.float32), good[0].y_train, good[0].x_test,
                       good[0].y_test, "binary", 2)
    strategy = fedavg(CFG, min_clients=3)
    transport, clients = federation([*good, broken], strategy)
    initial = clients["c0"].trainer.initial_params()
    history = train(strategy, transport, initial, RunSettings("r", 0, rounds=3))
    assert [e.version for e in history.events] == [0, 0, 0]
    assert all("need 3" in e.metrics["aborted"] for e in history.events)
    assert history.events[-1].evaluation == {}
    for name in initial:
        np.testing.assert_array_equal(history.params[name], initial[name])
