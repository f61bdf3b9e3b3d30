"""The one round flow (engine/flow.py): an asynchronous run resumed from a checkpoint equals
the uninterrupted run (virtual clock); asynchronous commits with any client work (SCAFFOLD,
FedNova, FedProx); central DP in async mode, one update per institution per commit,
accounted per commit; the [commit] section's refusals."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedsilo.algorithms.asynchronous import fedasync, fedbuff
from fedsilo.algorithms.fedavg import default_aggregator, fedavg
from fedsilo.algorithms.staleness import Staleness
from fedsilo.config.schema import load_config, parse_config
from fedsilo.engine.clock import VirtualClock
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from fedsilo.optim import sgd
from fedsilo.simulation.run import run_simulation
from fedsilo.store.checkpoint import load_checkpoint, save_checkpoint
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import EXAMPLES, federation

SIZES = ((30, 1), (90, 2), (15, 3), (50, 4))
CFG = {"epochs": 1, "batch_size": 8, "lr": 0.1}
CLOCK = VirtualClock(seconds_per_example=0.01, speeds={"c1": 0.3, "c3": 2.0},
                     delay="exponential", delay_mean=0.05, seed=5)
VERSIONS, CUT = 12, 5


def _strategy(kind: str):
    if kind == "fedasync":
        return fedasync(CFG, default_aggregator(), sgd(1.0), mixing=0.5, max_staleness=8)
    return fedbuff(CFG, default_aggregator(), sgd(1.0), buffer_size=2,
                   staleness=Staleness("polynomial"))


def _run(kind: str, start=None, on_commit=None):
    strategy = _strategy(kind)
    transport, clients = federation([binary_data(n, s) for n, s in SIZES], fedavg(CFG), seed=1)
    initial = clients["c0"].trainer.initial_params()
    return train(strategy, transport, initial, RunSettings("r", 3, VERSIONS), CLOCK,
                 start=start, on_commit=on_commit)


@pytest.mark.parametrize("kind", ["fedbuff", "fedasync"])
def test_an_async_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(kind, tmp_path):
    saved: dict[int, object] = {}
    whole = _run(kind, on_commit=lambda v, state: saved.setdefault(v, state))
    cut = min(v for v in saved if v >= CUT)  # a commit with no update waiting in the buffer
    save_checkpoint(tmp_path, cut, saved[cut])  # through the file, as a restarted server reads it
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.state.flow["open"]  # tasks were in flight
    resumed = _run(kind, start=(checkpoint.round, checkpoint.state))
    for name, value in whole.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    later = [e for e in whole.events if e.version > cut]
    assert [e.version for e in resumed.events] == [e.version for e in later]
    assert [e.participants for e in resumed.events] == [e.participants for e in later]
    assert [e.metrics["clock"]["time"] for e in resumed.events] == [
        e.metrics["clock"]["time"] for e in later]
    assert resumed.virtual_time == whole.virtual_time


def heart(**sections):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=6, compare=False, mode="async")
    raw["client"].update(steps=20)
    raw["clock"] = {"speeds": {"cleveland": 1.0, "hungary": 0.5, "switzerland": 2.0,
                               "va-long-beach": 0.7}, "delay": "exponential",
                    "delay_mean": 0.01}
    for name, values in sections.items():
        raw[name] = values if name == "strategy" else {**(raw.get(name) or {}), **values}
    return parse_config(raw, cfg.base_dir)


@pytest.mark.parametrize("name", ["scaffold", "fednova", "fedprox", "fedadam"])
def test_asynchronous_commits_with_any_client_work(name):
    extra = {"server_lr": 0.05} if name == "fedadam" else {}
    result = run_simulation(heart(strategy={"name": name, **extra},
                                  commit={"buffer_size": 2}), write=False)
    events = result.history.events
    assert [e.version for e in events] == list(range(1, 7))
    assert all(len(e.participants) == 2 for e in events)
    assert max(e.metrics["staleness"]["max"] for e in events) >= 1  # truly asynchronous
    assert result.final["accuracy"] > 0.6
    if name == "scaffold":  # the server's control variate moved
        assert any(np.any(c != 0) for c in result.history.state.work_state.values())


def test_central_dp_in_async_mode_takes_one_update_per_institution_per_commit():
    cfg = heart(strategy={"name": "fedbuff", "buffer_size": 3},
                privacy={"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0})
    result = run_simulation(cfg, write=False)
    events = result.history.events
    assert len(events) == 6
    for e in events:  # the barrier: each commit's updates come from distinct institutions
        assert len(e.participants) == 3 == len(set(e.participants))
    eps = [e.metrics["aggregator"]["epsilon"] for e in events]
    assert eps == sorted(eps) and len(set(eps)) == len(eps)  # one release per commit
    assert Counter(c for e in events for c in e.participants)["switzerland"] > 0


def test_the_commit_section_is_for_async_runs_of_synchronous_strategies():
    with pytest.raises(ConfigError, match=r"\[commit\] sets the buffer"):
        heart(run={"mode": "sync"}, strategy={"name": "fedavg"}, commit={"buffer_size": 2})
    with pytest.raises(ConfigError, match="fedbuff and fedasync take buffer_size"):
        heart(strategy={"name": "fedbuff"}, commit={"buffer_size": 2})
    with pytest.raises(ConfigError, match="min_contributors = 3"):
        heart(strategy={"name": "fedavg"}, commit={"buffer_size": 2},
              privacy={"mode": "central", "min_contributors": 3})


def test_a_barrier_buffer_larger_than_the_federation_is_refused_before_training():
    cfg = heart(strategy={"name": "fedavg"}, commit={"buffer_size": 6},
                privacy={"mode": "central"})
    with pytest.raises(ConfigError, match="buffer_size 6 > 4 institutions"):
        run_simulation(cfg, write=False)


def test_the_flow_is_driven_by_hand_and_refuses_a_reply_to_another_institutions_task():
    """The flow does no I/O: a test feeds it events. A reply naming a task sent to another
    institution is refused and that task stays open for its own institution."""
    from fedsilo.core.messages import Reply
    from fedsilo.engine.flow import Event, round_flow

    strategy = fedbuff({}, default_aggregator(weighted=False), sgd(1.0), buffer_size=1,
                       staleness=Staleness("constant"))
    flow = round_flow(strategy, {"w": np.zeros(2)}, RunSettings("r", 0, 1, evaluate_every=9))
    flow.send(None)
    out = flow.send(Event(0.0, ("a", "b")))
    tasks = {t.client_id: t for t in out.tasks}
    assert sorted(tasks) == ["a", "b"]

    def reply(sender: str, task) -> Reply:
        update = strategy.aggregator.encode({"w": np.ones(2)}, 1, task.layer_config, {})
        return Reply(task.task_id, sender, task.round, task.model_version, 1, update)

    out = flow.send(Event(1.0, ("a", "b"), (reply("b", tasks["a"]),)))
    [(refused, why)] = out.acks
    assert refused.client_id == "b" and why.code == "unknown_client"
    out = flow.send(Event(2.0, ("a", "b"), (reply("a", tasks["a"]),)))
    assert [why for _, why in out.acks if why is not None] == []
    while not out.last:  # the final evaluation: both institutions score version 1
        evals = [t for t in out.tasks if t.kind.value == "evaluate"]
        answers = tuple(Reply(t.task_id, t.client_id, t.round, t.model_version, 5,
                              metrics={"accuracy": 0.5}) for t in evals)
        out = flow.send(Event(3.0, ("a", "b"), answers))
    try:
        flow.send(Event(3.0, ()))
    except StopIteration as end:
        history = end.value
    np.testing.assert_array_equal(history.params["w"], -np.ones(2))  # a's update, once
    assert history.events[0].participants == ("a",)


def _by_hand(strategy, clients=("a", "b")):
    from fedsilo.engine.flow import Event, round_flow

    flow = round_flow(strategy, {"w": np.zeros(2)}, RunSettings("r", 0, 5, evaluate_every=9))
    flow.send(None)
    out = flow.send(Event(0.0, clients))
    return flow, {t.client_id: t for t in out.tasks}


def _update_reply(strategy, sender, task, version=None, error=None):
    from fedsilo.core.messages import Reply

    if error is not None:
        return Reply(task.task_id, sender, task.round, task.model_version, 0, error=error)
    update = strategy.aggregator.encode({"w": np.ones(2)}, 1, task.layer_config, {})
    return Reply(task.task_id, sender, task.round,
                 task.model_version if version is None else version, 1, update)


def test_a_reply_claiming_another_model_version_than_its_task_is_refused():
    """Staleness (and FedAsync's base model) come from the task the server sent, never from
    what the institution claims: a claim of a fresher version is refused with the reason."""
    from fedsilo.engine.flow import Event

    strategy = fedbuff({}, default_aggregator(weighted=False), sgd(1.0), buffer_size=1)
    flow, tasks = _by_hand(strategy)
    out = flow.send(Event(1.0, ("a", "b"), (_update_reply(strategy, "a", tasks["a"]),)))
    assert [why for _, why in out.acks] == [None]  # version 1 committed
    out = flow.send(Event(2.0, ("a", "b"), (_update_reply(strategy, "b", tasks["b"],
                                                          version=1),)))
    [(_, why)] = out.acks
    assert why.code == "wrong_round" and "its task carried version 0" in why.reason


def test_under_the_barrier_a_buffer_no_one_can_fill_stops_the_run_with_the_reason():
    from fedsilo.core.messages import ErrorInfo
    from fedsilo.engine.flow import Event
    from fedsilo.errors import AggregationError

    strategy = fedbuff({}, default_aggregator(weighted=False), sgd(1.0), buffer_size=2,
                       barrier=True)
    flow, tasks = _by_hand(strategy)
    failing = _update_reply(strategy, "b", tasks["b"], error=ErrorInfo("client_training_error",
                                                                        "disk full"))
    with pytest.raises(AggregationError, match=r"buffer of 2 cannot fill: 1 update.*\(b\)"):
        flow.send(Event(1.0, ("a", "b"), (_update_reply(strategy, "a", tasks["a"]), failing)))


def test_adaptive_clipping_is_refused_in_async_mode():
    with pytest.raises(ConfigError, match="adaptive_clipping in async mode"):
        heart(strategy={"name": "fedbuff", "buffer_size": 2},
              privacy={"mode": "central", "adaptive_clipping": True})
