"""The gRPC transport in one process (real sockets, real TLS, client threads): malformed and
out-of-round updates are refused with a reason while the others are served; 100 million
parameters go through in chunks."""

from __future__ import annotations

import dataclasses
import logging
import time

import grpc
import numpy as np
import pandas as pd
import pytest

from fedsilo.client.institution import Institution
from fedsilo.config.build import build_schema
from fedsilo.config.schema import load_config
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.data.loading import read_table
from fedsilo.session import run_session
from fedsilo.simulation.run import run_simulation
from fedsilo.transport import serde
from fedsilo.transport.grpc.client import Backoff, Stub, run_institution
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.tls import Gatekeeper, client_credentials, server_credentials
from tests.integration.conftest import real, start
from tests.integration.helpers import FILES, HEART, heart_config

pytestmark = pytest.mark.integration


def test_malformed_update_is_refused_and_the_others_are_served(kits, transport, tmp_path,
                                                               caplog):
    caplog.set_level(logging.INFO)
    honest = {n: real(n) for n in ("cleveland", "hungary", "switzerland")}
    rogue_inner = real("va-long-beach")

    def rogue(task: Task) -> Reply:
        reply = rogue_inner.handle(task)
        if task.kind is TaskKind.FIT and reply.update is not None:
            bad = {k: np.full_like(v, np.nan) for k, v in reply.update.items()}
            return dataclasses.replace(reply, update=bad)
        return reply

    threads = [start(kits, transport, n, h.handle) for n, h in honest.items()]
    threads.append(start(kits, transport, "va-long-beach", rogue))
    assert len(transport.wait_for_clients(4, 600)) == 4
    cfg = load_config(heart_config(tmp_path, rounds=3))
    d = cfg.data
    schema = build_schema(cfg, pd.DataFrame(columns=d.columns))
    result = run_session(cfg, transport, schema, "r", timeout=600,
                         read={"columns": d.columns, "na_values": d.na_values})
    for event in result.history.events:
        assert sorted(event.participants) == ["cleveland", "hungary", "switzerland"]
        assert "NaN" in event.rejected["va-long-beach"]
    assert result.history.events[-1].federated["accuracy"] > 0.6
    refused = [r.message for r in caplog.records if "reply refused" in r.message]
    assert refused and all("malformed_update" in m and "va-long-beach" in m for m in refused)


def test_reply_for_a_task_not_open_is_refused(kits, transport):
    channel = grpc.secure_channel(f"localhost:{transport.port}",
                                  client_credentials(kits / "hungary"))
    reply = Reply("run/7/fit/hungary", "hungary", 7, 3, 10, {"w": np.ones(2, np.float32)})
    ack = Stub(channel).Push(
        serde.encode("reply", serde.reply_meta(reply), reply.update), timeout=120)
    assert not ack.accepted and ack.code == "wrong_round" and "not open" in ack.reason
    # a reply for another institution's task is refused the same way
    transport.dispatch([Task("run", 1, 0, TaskKind.FIT, "cleveland", {})])
    other = dataclasses.replace(reply, task_id="run/1/fit/cleveland", round=1)
    ack = Stub(channel).Push(
        serde.encode("reply", serde.reply_meta(other), other.update), timeout=120)
    assert not ack.accepted and "not open for 'hungary'" in ack.reason
    channel.close()


@pytest.mark.slow
def test_hundred_million_parameters_round_trip(kits, transport):
    n = 100_000_000
    params = {"w": np.arange(n, dtype=np.float32)}

    def echo(task: Task) -> Reply:
        return Reply(task.task_id, "cleveland", task.round, task.model_version, 1,
                     {"w": task.params["w"] * 2})

    start(kits, transport, "cleveland", echo)
    assert transport.wait_for_clients(1, 600) == ["cleveland"]
    t0 = time.perf_counter()
    transport.dispatch([Task("big", 1, 0, TaskKind.FIT, "cleveland", params)])
    replies = list(transport.poll(timeout=300))
    seconds = time.perf_counter() - t0
    assert len(replies) == 1
    got = replies[0].update["w"]
    transport.acknowledge(replies[0], None)
    assert got.shape == (n,) and got.dtype == np.float32
    assert got[12345] == 24690.0 and got[-1] == np.float32(2 * (n - 1))
    print(f"100M float32 (400 MB) there and back over mTLS: {seconds:.1f} s")


def test_backoff_grows_and_caps():
    b = Backoff(base=0.5, cap=4.0, seed=1)
    delays = [b.next() for _ in range(8)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[:2]) <= 1.0 and min(delays[-3:]) >= 2.0
    b.reset()
    assert b.next() <= 0.5


def test_client_gives_up_when_no_server(kits):
    from fedsilo.errors import TransportError

    with pytest.raises(TransportError, match="unreachable"):
        run_institution("localhost:1", lambda t: None, client_credentials(kits / "hungary"),
                        give_up_after=1.0, backoff=Backoff(0.1, 0.2))


def deployed_and_simulated(kits, transport, tmp_path, **sections):
    """The heart example (3 rounds, `sections` replacing config sections) run over gRPC by
    four institution threads, and in simulation: (deployed history, simulated params)."""
    from fedsilo.config.schema import parse_config

    threads = [start(kits, transport, n, real(n).handle) for n in FILES]
    assert len(transport.wait_for_clients(4, 600)) == 4 and len(threads) == 4
    cfg = load_config(heart_config(tmp_path, rounds=3, compare=False))
    raw = cfg.model_dump(exclude={"base_dir"})
    raw.update(sections)
    cfg = parse_config(raw, cfg.base_dir)
    d = cfg.data
    schema = build_schema(cfg, pd.DataFrame(columns=d.columns))
    deployed = run_session(cfg, transport, schema, "deployed", timeout=600,
                           read={"columns": d.columns, "na_values": d.na_values})
    for event in deployed.history.events:
        assert sorted(event.participants) == sorted(FILES)
    return deployed.history, run_simulation(cfg, write=False).history.params


def assert_same_params(deployed, simulated):
    for name, value in simulated.items():
        np.testing.assert_allclose(deployed.params[name], value, atol=1e-5)


def test_secure_aggregation_over_grpc_matches_simulation(kits, transport, tmp_path):
    aggregation = {**load_config(heart_config(tmp_path)).aggregation.model_dump(),
                   "secure": "secagg+", "threshold": 2, "neighbours": 3}
    deployed, simulated = deployed_and_simulated(kits, transport, tmp_path,
                                                 aggregation=aggregation)
    assert all(e.metrics["aggregator"]["secagg_dropouts"] == 0 for e in deployed.events)
    assert_same_params(deployed, simulated)


def test_ckks_over_grpc_with_per_round_keys(tmp_path):
    """No CKKS key is provisioned: the key holder makes one per round; every party signs and
    checks with its kit identity (client.key, client.pem, ca.pem)."""
    from fedsilo.aggregation.secure.identity import kit_keys

    root = tmp_path / "ckks-kits"
    provision(Project("heart", "localhost", tuple(FILES)), root)
    assert not list(root.rglob("ckks.*"))  # no kit holds a CKKS key
    server = GrpcServerTransport("127.0.0.1:0", Gatekeeper.from_kit(root / "server"),
                                 server_credentials(root / "server"))
    try:
        for n in FILES:
            path = HEART / "data" / f"processed.{FILES[n]}.data"
            inst = Institution(n, lambda read, p=path: read_table(p, read.get("columns"),
                                                                  read.get("na_values")),
                               keys=kit_keys(root / n))
            start(root, server, n, inst.handle)
        assert len(server.wait_for_clients(4, 600)) == 4
        cfg = load_config(heart_config(tmp_path, rounds=2, compare=False))
        cfg = cfg.model_copy(update={"aggregation": cfg.aggregation.model_copy(
            update={"secure": "ckks"})})
        d = cfg.data
        deployed = run_session(cfg, server, build_schema(cfg, pd.DataFrame(columns=d.columns)),
                               "ckks", timeout=600,
                               read={"columns": d.columns, "na_values": d.na_values},
                               keys=kit_keys(root / "server"))
    finally:
        server.close(0.5)
    plain = run_simulation(cfg.model_copy(update={"aggregation": cfg.aggregation.model_copy(
        update={"secure": "none"})}), write=False)
    assert all("aborted" not in e.metrics for e in deployed.history.events)
    for name, value in plain.history.params.items():  # up to the flooding noise (ckks.py)
        np.testing.assert_allclose(deployed.history.params[name], value, atol=5e-2)


@pytest.mark.parametrize("strategy", [{"name": "scaffold"},
                                      {"name": "fednova"},
                                      {"name": "fedprox", "mu": 0.1}], ids=lambda s: s["name"])
def test_stateful_strategies_over_grpc_match_simulation(kits, transport, tmp_path, strategy):
    """SCAFFOLD's server variate travels in the task and each institution keeps its own c_i
    across rounds in its process; FedNova's a_i travels in the reply; FedProx's μ in the
    config. Same strategy and client code as the simulation, same parameters."""
    deployed, simulated = deployed_and_simulated(kits, transport, tmp_path, strategy=strategy)
    assert_same_params(deployed, simulated)
