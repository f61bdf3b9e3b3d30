"""Secure FedBuff (run.mode = "async", strategy fedbuff, aggregation secagg+) over the real
gRPC transport (sockets, mutual TLS from `fedsilo provision`, one thread per institution)
under the wall clock, as `fedsilo server` runs it: the same model as the simulation.

buffer_size = 4 = every hospital: each SecAgg+ group is the whole federation and trains on
one model version, so the virtual and the wall clock cannot order anything differently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsilo.config.build import build_schema
from fedsilo.config.schema import load_config, parse_config
from fedsilo.engine.flow import RunHistory
from fedsilo.session import run_session
from fedsilo.simulation.run import run_simulation
from tests.integration.conftest import real, start
from tests.integration.helpers import FILES, heart_config

pytestmark = pytest.mark.integration
NAMES = sorted(FILES)
ROUNDS = 3


def secure_fedbuff(tmp_path):
    cfg = load_config(heart_config(tmp_path, rounds=ROUNDS, compare=False))
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"]["mode"] = "async"
    raw["strategy"] = {"name": "fedbuff", "buffer_size": 4}
    raw["aggregation"] = {**raw["aggregation"], "secure": "secagg+", "threshold": 2,
                          "neighbours": 3}
    return parse_config(raw, cfg.base_dir)


class Watched:
    """The training replies the server transport handed to the run (next_reply) and those
    the run acknowledged; `release` acknowledges any left over, so that an institution's
    Push is not left waiting for its Ack (server.py: up to 600 s, and a pool thread the
    interpreter joins at exit)."""

    def __init__(self, transport) -> None:
        self.t, self.received, self.acknowledged = transport, {}, set()
        inner_next, inner_ack = transport.next_reply, transport.acknowledge

        def next_reply(timeout):
            reply = inner_next(timeout)
            if reply is not None:
                self.received[reply.task_id] = reply
            return reply

        def acknowledge(reply, rejection):
            self.acknowledged.add(reply.task_id)
            inner_ack(reply, rejection)

        transport.next_reply, transport.acknowledge = next_reply, acknowledge

    def unacknowledged(self) -> list[str]:
        return sorted(set(self.received) - self.acknowledged)

    def release(self) -> None:
        for task_id in self.unacknowledged():
            self.t.acknowledge(self.received[task_id], None)


def deployed(kits, transport, cfg) -> RunHistory:
    """`cfg` over gRPC by four institution threads, under the wall clock (as deployed)."""
    threads = [start(kits, transport, n, real(n).handle) for n in NAMES]
    assert len(transport.wait_for_clients(4, 600)) == 4 and len(threads) == 4
    wall = cfg.model_copy(update={"clock": cfg.clock.model_copy(update={"kind": "wall"})})
    d = cfg.data
    return run_session(wall, transport, build_schema(cfg, pd.DataFrame(columns=d.columns)),
                       "secure-fedbuff", timeout=600,
                       read={"columns": d.columns, "na_values": d.na_values}).history


def check_events(history: RunHistory) -> None:
    events = history.events
    assert len(events) == ROUNDS
    assert [e.version for e in events] == list(range(1, ROUNDS + 1))
    for e in events:
        assert sorted(e.participants) == NAMES, e
        assert not e.rejected, e.rejected
        assert "aborted" not in e.metrics, e.metrics
        assert e.metrics["aggregator"]["secagg_dropouts"] == 0, e.metrics
    assert set(events[-1].evaluation) == set(NAMES)


def test_secure_fedbuff_over_grpc_equals_simulation(kits, transport, tmp_path):
    cfg = secure_fedbuff(tmp_path)
    history = deployed(kits, transport, cfg)
    simulated = run_simulation(cfg, write=False).history
    check_events(history)
    check_events(simulated)
    assert set(history.params) == set(simulated.params)
    for name, value in simulated.params.items():  # the same fixed-point sums: bit-identical
        np.testing.assert_array_equal(history.params[name], value, err_msg=name)


def test_every_reply_of_a_grpc_run_is_acknowledged(kits, transport, tmp_path):
    """The last reply of a run too (the flow's last outbox is sent before it returns)."""
    watched = Watched(transport)
    try:
        check_events(deployed(kits, transport, secure_fedbuff(tmp_path)))
        assert watched.unacknowledged() == []
    finally:
        watched.release()
