"""Fair share of the server (real sockets, mutual TLS with real kits, client threads): one
institution flooding the server on its own certificate leaves the others served; calls beyond
an institution's rate, a second Push while one is received, and calls beyond the server's
concurrency are refused with RESOURCE_EXHAUSTED and a reason; refusals are logged once per
burst; a newer Pull of an institution replaces its waiting one."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pandas as pd
import pytest

from fedsilo.config.build import build_schema
from fedsilo.config.schema import load_config
from fedsilo.core.messages import ErrorInfo, Reply, Task, TaskKind
from fedsilo.session import run_session
from fedsilo.transport import serde
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.client import Stub, run_institution
from fedsilo.transport.grpc.fairness import Limits, Rate
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.tls import Gatekeeper, client_credentials, server_credentials
from tests.integration.conftest import real, start
from tests.integration.helpers import heart_config

pytestmark = pytest.mark.integration
ATTACKER = "va-long-beach"
HONEST = ("cleveland", "hungary", "switzerland")
HANG = 600  # seconds: a hang guard, never a budget


def connect(kits, transport, name) -> grpc.Channel:
    return grpc.secure_channel(f"localhost:{transport.port}", client_credentials(kits / name))


def pull(stub: Stub, wait: float) -> str:
    """One Pull: the kind of message received."""
    return serde.decode(stub.Pull(pb.PullRequest(wait_seconds=wait), timeout=HANG))[0]


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():
        assert time.monotonic() < deadline, "hang guard"
        time.sleep(0.01)


def reply_frames(reply: Reply, release: threading.Event | None = None) -> Iterator[bytes]:
    """A reply's frames; with `release`, the call starts but sends none until it is set."""
    if release is not None:
        release.wait(HANG)
    yield from serde.encode("reply", serde.reply_meta(reply), reply.update)


class Flood:
    """`calls` concurrent Pulls on one institution's certificate over `connections` TLS
    connections, each reopened as soon as it ends, until `stop`. A task it receives it declines
    (an error reply, resent until acknowledged): a member that takes no share of the work."""

    def __init__(self, kits, transport, name: str, calls: int = 200,
                 connections: int = 25) -> None:
        self.channels = [connect(kits, transport, name) for _ in range(connections)]
        self.outcomes: Counter[str] = Counter()
        self.refused = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._pull, daemon=True,
                                          args=(Stub(self.channels[i % connections]),))
                         for i in range(calls)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for c in self.channels:
            c.close()  # cancels the calls in progress
        for t in self._threads:
            t.join(HANG)

    def _count(self, outcome: str) -> None:
        with self._lock:
            if not self._stop.is_set():
                self.outcomes[outcome] += 1
        if outcome == "RESOURCE_EXHAUSTED":
            self.refused.set()

    def _pull(self, stub: Stub) -> None:
        while not self._stop.is_set():
            try:
                kind, meta, arrays = serde.decode(stub.Pull(pb.PullRequest(wait_seconds=60),
                                                            timeout=HANG))
            except (grpc.RpcError, ValueError) as e:  # ValueError: its channel is closed
                self._count(e.code().name if isinstance(e, grpc.RpcError) else "closed")
                continue
            self._count(kind)
            if kind == "task":
                self._decline(stub, serde.task_from(meta, arrays))

    def _decline(self, stub: Stub, task: Task) -> None:
        reply = Reply(task.task_id, task.client_id, task.round, task.model_version, 0,
                      error=ErrorInfo("declined", "flooding, not working"))
        while not self._stop.is_set():
            try:
                ack = stub.Push(reply_frames(reply), timeout=HANG)
            except (grpc.RpcError, ValueError) as e:
                self._count("push " + (e.code().name if isinstance(e, grpc.RpcError)
                                       else "closed"))
                continue
            self._count(f"push {ack.code or 'accepted'}")
            return


def test_a_flood_from_one_certificate_leaves_the_others_served(kits, transport, tmp_path,
                                                                 caplog):
    """200 concurrent Pulls on va-long-beach's certificate, reopened as they end, while the
    three other hospitals run a real session: every round completes with the three of them,
    the attacker's extra Pulls were refused or replaced, and the server serves afterwards."""
    caplog.set_level(logging.INFO)
    flood = Flood(kits, transport, ATTACKER)
    try:
        assert flood.refused.wait(HANG)  # the flood is on before anyone honest connects
        for name in HONEST:
            start(kits, transport, name, real(name).handle)
        assert len(transport.wait_for_clients(4, HANG)) == 4
        cfg = load_config(heart_config(tmp_path, rounds=3, compare=False))
        d = cfg.data
        schema = build_schema(cfg, pd.DataFrame(columns=d.columns))
        result = run_session(cfg, transport, schema, "flooded", timeout=HANG,
                             read={"columns": d.columns, "na_values": d.na_values})
    finally:
        flood.stop()
    events = result.history.events
    assert [e.round for e in events] == [1, 2, 3]
    for event in events:
        assert sorted(event.participants) == list(HONEST)
        assert "declined" in event.rejected[ATTACKER]  # it was served its own tasks too
    assert events[-1].federated["accuracy"] > 0.6
    out = flood.outcomes  # every Pull that brought no task was refused or replaced
    assert out["RESOURCE_EXHAUSTED"] > 0 and out["ABORTED"] > 0, out
    pulls = {k for k in out if not k.startswith("push")}
    assert pulls <= {"RESOURCE_EXHAUSTED", "ABORTED", "task", "idle"}, out
    logged = [r.message for r in caplog.records
              if r.message.startswith(f"refusing Pull from '{ATTACKER}': rate limit")]
    assert 1 <= len(logged) < out["RESOURCE_EXHAUSTED"]  # once per burst, not per call
    assert set(HONEST) <= set(transport.clients())  # still serving them
    channel = connect(kits, transport, ATTACKER)  # and the attacker, once it slows down
    until(lambda: served(Stub(channel)))
    channel.close()


def served(stub: Stub) -> bool:
    try:
        return pull(stub, 0) == "idle"
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        time.sleep(0.1)  # its bucket refills
        return False


def echo(task: Task) -> Reply:
    return Reply(task.task_id, task.client_id, task.round, task.model_version, 1,
                 {"w": task.params["w"] + 1})


@pytest.fixture
def tight(kits):
    """A server whose buckets hold 3 calls and never refill: a test of speed-free counts."""
    t = GrpcServerTransport("127.0.0.1:0", Gatekeeper.from_kit(kits / "server"),
                            server_credentials(kits / "server"),
                            limits=Limits(pull=Rate(3, 0.0), push=Rate(3, 0.0)))
    yield t
    t.close(0.5)


def test_calls_beyond_the_rate_are_refused_and_a_normal_institution_is_unaffected(
        kits, tight, caplog):
    caplog.set_level(logging.INFO)
    # hungary: the real client, its idle poll a minute long; every call it makes brings work
    threading.Thread(target=run_institution, daemon=True, kwargs=dict(
        address=f"localhost:{tight.port}", handle=echo, name="hungary", wait=60.0,
        credentials=client_credentials(kits / "hungary"))).start()
    assert tight.wait_for_clients(1, HANG) == ["hungary"]
    channel = connect(kits, tight, ATTACKER)
    stub = Stub(channel)
    # Pulls: three idle ones spend the bucket, then every Pull is refused with a reason
    assert [pull(stub, 0) for _ in range(3)] == ["idle"] * 3
    for _ in range(3):
        e = refusal(lambda: pull(stub, 0))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit" in e.details() and f"'{ATTACKER}'" in e.details()
    # Pushes: one at a time, refused before their stream is read
    stray = Reply("run/9/fit/" + ATTACKER, ATTACKER, 9, 0, 1, {"w": np.ones(2, np.float32)})
    release = threading.Event()
    first = stub.Push.future(reply_frames(stray, release), timeout=HANG)
    until(lambda: ATTACKER in tight.fair.receiving)
    e = refusal(lambda: stub.Push(reply_frames(stray), timeout=HANG))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "already being received" in \
        e.details()
    release.set()
    assert first.result().code == "wrong_round"
    assert stub.Push(reply_frames(stray), timeout=HANG).code == "wrong_round"
    held = threading.Event()  # never released before the answer: the stream was not read
    e = refusal(lambda: stub.Push(reply_frames(stray, held), timeout=HANG))
    held.set()
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in e.details()
    # hungary meanwhile: 8 tasks, more than its bucket, all served (work is free)
    for r in range(1, 9):
        tight.dispatch([Task("run", r, 0, TaskKind.FIT, "hungary",
                             {"w": np.full(2, r, np.float32)})])
        [reply] = tight.poll(timeout=HANG)
        tight.acknowledge(reply, None)
        assert reply.client_id == "hungary" and reply.update["w"].tolist() == [r + 1] * 2
    assert refusal(lambda: pull(stub, 0)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel.close()
    warnings = [r.message for r in caplog.records if r.name.endswith("fairness")]
    assert not [m for m in warnings if "hungary" in m]
    assert not [r for r in caplog.records if "server refused" in r.message]  # hungary's side
    pulls = [m for m in warnings if m.startswith(f"refusing Pull from '{ATTACKER}'")]
    pushes = [m for m in warnings if m.startswith(f"refusing Push from '{ATTACKER}'")]
    assert len(pulls) == 1 and "rate limit" in pulls[0]  # 4 refusals, one line
    assert len(pushes) == 2  # one line per kind: the busy one, then the rate limit
    assert "already being received" in pushes[0] and "rate limit" in pushes[1]


def test_a_newer_pull_replaces_the_waiting_one(kits, transport):
    """One Pull per institution waits: the older one ends with ABORTED and a reason, and the
    task goes to the newer one."""
    old, new = (connect(kits, transport, "cleveland") for _ in range(2))
    first = Stub(old).Pull(pb.PullRequest(wait_seconds=60), timeout=HANG)
    assert transport.wait_for_clients(1, HANG) == ["cleveland"]
    second = Stub(new).Pull(pb.PullRequest(wait_seconds=60), timeout=HANG)
    e = refusal(lambda: list(first))
    assert e.code() == grpc.StatusCode.ABORTED
    assert "replaced by a newer Pull from 'cleveland'" in e.details()
    transport.dispatch([Task("run", 1, 0, TaskKind.FIT, "cleveland",
                             {"w": np.ones(2, np.float32)})])
    assert serde.decode(second)[0] == "task"
    old.close()
    new.close()


def test_calls_beyond_the_server_concurrency_are_refused(kits):
    server = GrpcServerTransport("127.0.0.1:0", Gatekeeper.from_kit(kits / "server"),
                                 server_credentials(kits / "server"),
                                 limits=Limits(max_concurrent_rpcs=2))
    channels = [connect(kits, server, n) for n in HONEST]
    try:
        waiting = [Stub(c).Pull(pb.PullRequest(wait_seconds=60), timeout=HANG)
                   for c in channels[:2]]
        assert len(server.wait_for_clients(2, HANG)) == 2
        e = refusal(lambda: pull(Stub(channels[2]), 0))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Concurrent RPC limit exceeded" in e.details()
        server.close(0.5)
        assert [serde.decode(w)[0] for w in waiting] == ["shutdown"] * 2
    finally:
        server.close(0.5)
        for c in channels:
            c.close()
