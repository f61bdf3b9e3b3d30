"""Asynchronous FL over the real gRPC transport (sockets, mutual TLS, one thread per
institution): no update lost or applied twice under concurrent arrivals, a slow institution
never blocks the others, too-stale updates are refused with the reason sent back."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.algorithms.asynchronous import fedbuff
from fedsilo.algorithms.staleness import Staleness
from fedsilo.config.build import build_schema
from fedsilo.config.schema import load_config, parse_config
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.engine.clock import WallClock
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.session import run_session
from tests.integration.conftest import real, start
from tests.integration.helpers import FILES, heart_config

pytestmark = pytest.mark.integration
NAMES = sorted(FILES)


class Counting:
    """An institution whose fit update is 1 in its own coordinate: what the server applied
    can be read off the model. Counts what it sent and what the server said back."""

    def __init__(self, index: int) -> None:
        self.index, self.sent = index, 0
        self.encoder = WeightedMean(PlainSum(), weighted=False)

    def handle(self, task: Task) -> Reply:
        if task.kind is not TaskKind.FIT:
            return Reply(task.task_id, task.client_id, task.round, task.model_version, 1,
                         metrics={"accuracy": 1.0})
        update = {"w": np.zeros(len(NAMES), np.float64)}
        update["w"][self.index] = 1.0
        self.sent += 1
        return Reply(task.task_id, task.client_id, task.round, task.model_version, 1,
                     self.encoder.encode(update, 1, {}, {}), {})


def test_no_update_is_lost_or_applied_twice_under_concurrent_arrivals(kits, transport):
    institutions = {n: Counting(i) for i, n in enumerate(NAMES)}
    for n in NAMES:
        start(kits, transport, n, institutions[n].handle)
    assert len(transport.wait_for_clients(4, 600)) == 4
    strategy = fedbuff({}, WeightedMean(PlainSum(), weighted=False), _sgd(), buffer_size=4,
                       staleness=Staleness("constant"))
    versions = 40
    history = train(strategy, transport, {"w": np.zeros(len(NAMES))},
                    RunSettings("count", 0, versions, time_limit=600), WallClock())
    applied = Counter(c for e in history.events for c in e.participants)
    assert sum(applied.values()) == 4 * versions
    # θ = -(1/4) Σ over applied updates of e_i: each accepted update exactly once
    np.testing.assert_allclose(-4 * history.params["w"], [applied[n] for n in NAMES])
    rejected = sum(len(e.rejected) for e in history.events)
    sent = sum(i.sent for i in institutions.values())
    assert sent >= sum(applied.values()) + rejected  # the rest arrived after the end
    assert sent - sum(applied.values()) - rejected <= 4


def _sgd():
    from fedsilo.optim import sgd

    return sgd(1.0)


class Lagging:
    """A real institution that holds every other fit reply until the server has committed
    `lag` versions past the task's model (read off the run's events, not a clock): those
    replies are stale by construction; the others are sent at once."""

    def __init__(self, name: str, lag: int) -> None:
        self.inner, self.lag, self.fits = real(name), lag, 0
        self.version, self.done = 0, False
        self.cond = threading.Condition()

    def committed(self, event) -> None:  # the run's listener
        with self.cond:
            self.version = event.version
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def handle(self, task: Task) -> Reply:
        if task.kind is TaskKind.FIT:
            self.fits += 1
            if self.fits % 2 == 1:
                with self.cond:
                    self.cond.wait_for(lambda: self.done
                                       or self.version >= task.model_version + self.lag)
        return self.inner.handle(task)


def test_heart_disease_async_over_grpc_with_a_slow_hospital(kits, transport, tmp_path):
    slow = Lagging("cleveland", lag=4)
    handlers = {n: (slow.handle if n == "cleveland" else real(n).handle) for n in NAMES}
    for n in NAMES:
        start(kits, transport, n, handlers[n])
    assert len(transport.wait_for_clients(4, 600)) == 4
    cfg = load_config(heart_config(tmp_path, rounds=30, compare=False))
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(mode="async", evaluate_every=30)  # an event is out at its commit
    raw["strategy"] = {"name": "fedbuff", "buffer_size": 2, "max_staleness": 3}
    cfg = parse_config(raw, cfg.base_dir)
    schema = build_schema(cfg, pd.DataFrame(columns=cfg.data.columns))

    def listener(event) -> None:
        slow.committed(event)
        if event.version >= 29:  # the last commit is next: the final evaluation needs its
            slow.finish()        # answer, and the event of version 30 waits for it

    try:
        result = run_session(cfg, transport, schema, "async", timeout=600, listener=listener,
                             read={"columns": cfg.data.columns,
                                   "na_values": cfg.data.na_values})
    finally:
        slow.finish()
    events = result.history.events
    assert len(events) == 30 and events[-1].version == 30  # the slow one never blocked
    applied = Counter(c for e in events for c in e.participants)
    assert all(applied[n] > 0 for n in NAMES if n != "cleveland")
    stale = [r for e in events for c, r in e.rejected.items() if c == "cleveland"]
    assert stale and all("stale_update" in r and "max_staleness 3" in r for r in stale)
    assert set(events[-1].evaluation) == set(NAMES)
    assert events[-1].federated["accuracy"] > 0.7


class Frozen:
    """An institution whose process freezes on its first fit task (it never answers)."""

    def __init__(self, name: str) -> None:
        self.inner, self.release = real(name), threading.Event()
        self.frozen = threading.Event()

    def handle(self, task: Task) -> Reply:
        if task.kind is TaskKind.FIT:
            self.frozen.set()
            self.release.wait()
        return self.inner.handle(task)


def test_a_frozen_institution_is_re_tasked_and_its_restarted_process_rejoins(kits, transport,
                                                                             tmp_path):
    """The frozen process's open task goes to its restarted process as soon as that one
    asks for work (no deadline involved); the frozen one's late reply is refused."""
    frozen = Frozen("cleveland")
    start(kits, transport, "cleveland", frozen.handle)
    for n in NAMES:
        if n != "cleveland":
            start(kits, transport, n, real(n).handle)
    assert len(transport.wait_for_clients(4, 600)) == 4

    def restart_when_frozen() -> None:
        frozen.frozen.wait()
        start(kits, transport, "cleveland", real("cleveland").handle)

    restarted = threading.Thread(target=restart_when_frozen, daemon=True)
    restarted.start()
    cfg = load_config(heart_config(tmp_path, rounds=60, compare=False))
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"]["mode"] = "async"
    raw["strategy"] = {"name": "fedbuff", "buffer_size": 2}
    cfg = parse_config(raw, cfg.base_dir)
    schema = build_schema(cfg, pd.DataFrame(columns=cfg.data.columns))
    try:
        result = run_session(cfg, transport, schema, "frozen", timeout=600,
                             read={"columns": cfg.data.columns,
                                   "na_values": cfg.data.na_values})
    finally:
        frozen.release.set()  # the frozen thread ends; its late reply is refused
        restarted.join()
    events = result.history.events
    assert events[-1].version == 60
    applied = Counter(c for e in events for c in e.participants)
    assert applied["cleveland"] >= 1, applied  # the restarted process got the newest model
    assert set(events[-1].evaluation) == set(NAMES)
