"""A server that a broken or malicious institution cannot crash, stall, poison or read.

Each test is one attack (issue 13 §1, §3) by ONE institution holding a real kit, over a real
gRPC server transport with mutual TLS on loopback, while the three other hospitals (real
heart-disease data) run a 5-round session: the server keeps serving, every honest round
commits, the attack is refused at arrival with its reason recorded in the round (and in the
run store where the attack was aimed at it), and the honest hospitals' accuracy stays within
2 points of the same run without the attacker. Deadlines are hang guards of minutes: a
refused reply is recorded against its task at once, so no round waits for one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from fedsilo.aggregation.mean import WEIGHT_KEY
from fedsilo.config.build import build_schema
from fedsilo.config.schema import RunConfig, load_config, parse_config
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.session import SessionResult, run_session
from fedsilo.store.recorder import Recorder
from fedsilo.store.run_store import RunStore
from fedsilo.transport import serde
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.client import Stub
from fedsilo.transport.grpc.server import OPTIONS
from fedsilo.transport.grpc.tls import client_credentials
from fedsilo.transport.inprocess import InProcessTransport
from tests.integration.conftest import real, start
from tests.integration.helpers import FILES, heart_config
from tests.store.test_postgres import INITDB, PG_CTL, _postgres_user, postgres_url  # noqa: F401

pytestmark = pytest.mark.integration
ATTACKER = "va-long-beach"
HONEST = sorted(n for n in FILES if n != ATTACKER)
ROUNDS = 5
Handle = Callable[[Task], Reply]


def heart(tmp_path: Path, **sections: dict) -> RunConfig:
    cfg = load_config(heart_config(tmp_path, rounds=ROUNDS, compare=False))
    raw = cfg.model_dump(exclude={"base_dir"})
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_config(raw, cfg.base_dir)


def run(cfg: RunConfig, transport, recorder: Recorder | None = None,  # type: ignore[no-untyped-def]
        run_id: str = "attacked") -> SessionResult:
    d = cfg.data
    return run_session(cfg, transport, build_schema(cfg, pd.DataFrame(columns=d.columns)),
                       run_id, read={"columns": d.columns, "na_values": d.na_values},
                       timeout=600, recorder=recorder)


def attacked(kits, transport, tmp_path, attacker: Handle | None,  # type: ignore[no-untyped-def]
             recorder: Recorder | None = None, **sections: dict) -> SessionResult:
    """The session with the three honest hospitals and `attacker` (a thread institution with
    that handle; None: it runs elsewhere), over TLS."""
    for name in HONEST:
        start(kits, transport, name, real(name).handle)
    if attacker is not None:
        start(kits, transport, ATTACKER, attacker)
    assert len(transport.wait_for_clients(4, 600)) == 4
    return run(heart(tmp_path, **sections), transport, recorder,
               recorder.run_id if recorder is not None else "attacked")


def honest_accuracy(result: SessionResult) -> float:
    """Accuracy of the final model on the honest hospitals' test rows together."""
    sizes = {n: len(real(n).split(result.setup["data"]).test) for n in HONEST}
    evaluation = result.history.events[-1].evaluation
    return sum(evaluation[n]["accuracy"] * sizes[n] for n in HONEST) / sum(sizes.values())


@pytest.fixture(scope="module")
def without_attacker(tmp_path_factory) -> SessionResult:
    """The same run with the three honest hospitals only."""
    cfg = heart(tmp_path_factory.mktemp("clean"))
    return run(cfg, InProcessTransport({n: real(n) for n in HONEST}))


def assert_served(result: SessionResult, without_attacker: SessionResult,
                  attacker_trains: bool) -> None:
    """Every round committed with every honest hospital; the model is not taken over."""
    events = result.history.events
    assert [e.round for e in events] == list(range(1, ROUNDS + 1))
    for e in events:
        assert "aborted" not in e.metrics
        assert set(HONEST) <= set(e.participants)
        assert (ATTACKER in e.participants) == attacker_trains
    assert abs(honest_accuracy(result) - honest_accuracy(without_attacker)) <= 0.02
    assert all(np.isfinite(a).all() for a in result.history.params.values())


def rejections(result: SessionResult) -> list[str]:
    return [e.rejected[ATTACKER] for e in result.history.events]


def dropped_evaluations(result: SessionResult) -> list[str]:
    return [e.metrics["evaluation"]["dropped"][ATTACKER] for e in result.history.events]


class Lying:
    """The attacker's real institution, whose replies to tasks of `kind` are rewritten."""

    def __init__(self, kind: TaskKind, rewrite: Callable[[Reply], Reply]) -> None:
        self.inner, self.kind, self.rewrite = real(ATTACKER), kind, rewrite

    def handle(self, task: Task) -> Reply:
        reply = self.inner.handle(task)
        return self.rewrite(reply) if task.kind is self.kind else reply


def metrics(**changed: float) -> Callable[[Reply], Reply]:
    return lambda r: dataclasses.replace(r, metrics={**r.metrics, **changed})


def recorder_at(url: str | Path, tmp_path: Path) -> Recorder:
    """A run store (SQLite file or PostgreSQL URL) recording the session, as the server's."""
    recorder = Recorder(RunStore(url), "attacked", tmp_path / "run", ROUNDS, checkpoint_every=0)
    recorder.start("attacked", {"attacker": ATTACKER}, "sync", "fedavg", "accuracy")
    return recorder


# --- evaluation metrics -------------------------------------------------------------------

def test_nan_accuracy_is_dropped_and_never_reaches_the_store(kits, transport, tmp_path,
                                                             without_attacker):
    """Was: IntegrityError (NOT NULL constraint failed: institution_metrics.value), the server
    crashed and the run stayed 'running'."""
    recorder = recorder_at(tmp_path / "fedsilo.db", tmp_path)
    result = attacked(kits, transport, tmp_path,
                      Lying(TaskKind.EVALUATE, metrics(accuracy=math.nan)).handle, recorder)
    recorder.finish()
    assert_served(result, without_attacker, attacker_trains=True)
    assert all("metric 'accuracy' is not a finite number" in r
               for r in dropped_evaluations(result))
    stored = RunStore(tmp_path / "fedsilo.db").run("attacked")
    assert stored["status"] == "finished" and len(stored["rounds"]) == ROUNDS
    assert {m["institution"] for m in stored["institution_metrics"]} == set(HONEST)
    assert all("not a finite number" in r["metrics"]["evaluation"]["dropped"][ATTACKER]
               for r in stored["rounds"])


def test_infinite_accuracy_is_dropped_so_no_infinity_is_served(kits, transport, tmp_path,
                                                               without_attacker):
    """Was: the dashboard API returned `Infinity`."""
    recorder = recorder_at(tmp_path / "fedsilo.db", tmp_path)
    result = attacked(kits, transport, tmp_path,
                      Lying(TaskKind.EVALUATE, metrics(accuracy=math.inf)).handle, recorder)
    recorder.finish()
    assert_served(result, without_attacker, attacker_trains=True)
    assert all("not a finite number" in r for r in dropped_evaluations(result))
    stored = RunStore(tmp_path / "fedsilo.db").run("attacked")
    json.dumps(stored["institution_metrics"], allow_nan=False)  # no Infinity to serve
    json.dumps([r["federated"] for r in stored["rounds"]], allow_nan=False)


@pytest.mark.skipif(INITDB is None or PG_CTL is None, reason="PostgreSQL is not installed")
@pytest.mark.skipif(__import__("os").geteuid() == 0 and not _postgres_user(),
                    reason="running as root without a 'postgres' user")
def test_a_metric_name_of_100_characters_never_reaches_postgresql(
        kits, transport, tmp_path, without_attacker, postgres_url):  # noqa: F811
    """Was: StringDataRightTruncation, the server crashed (PostgreSQL store)."""
    recorder = recorder_at(postgres_url, tmp_path)
    result = attacked(kits, transport, tmp_path,
                      Lying(TaskKind.EVALUATE, metrics(**{"a" * 100: 0.5})).handle, recorder)
    recorder.finish()
    assert_served(result, without_attacker, attacker_trains=True)
    assert all("metric name is not 1-64 characters" in r for r in dropped_evaluations(result))
    stored = RunStore(postgres_url).run("attacked")
    assert stored["status"] == "finished" and len(stored["rounds"]) == ROUNDS
    assert {m["institution"] for m in stored["institution_metrics"]} == set(HONEST)


def test_an_evaluation_claiming_1e15_test_rows_is_dropped(kits, transport, tmp_path,
                                                           without_attacker):
    """Was: federated accuracy reported as 0.0000 every round."""
    lie = Lying(TaskKind.EVALUATE, lambda r: dataclasses.replace(
        r, num_examples=10**15, metrics={**r.metrics, "accuracy": 0.0}))
    result = attacked(kits, transport, tmp_path, lie.handle)
    assert_served(result, without_attacker, attacker_trains=True)
    assert all("claims more test examples than the" in r and "test rows it reported" in r
               for r in dropped_evaluations(result))
    for e in result.history.events:
        assert ATTACKER not in e.evaluation and e.federated["accuracy"] > 0.6


# --- aggregation weight -------------------------------------------------------------------

def weighted(weight: float, value: float | None = None) -> Callable[[Reply], Reply]:
    """The update with `weight` as its weight entry (and every value `value` × weight)."""
    def rewrite(r: Reply) -> Reply:
        assert r.update is not None
        update = {n: a if value is None else np.full_like(a, value * weight)
                  for n, a in r.update.items()}
        update[WEIGHT_KEY] = np.array([weight], np.float64)
        return dataclasses.replace(r, update=update)
    return rewrite


def test_a_weight_of_1e12_with_an_update_of_5_is_refused(kits, transport, tmp_path,
                                                          without_attacker):
    """Was: accepted; accuracy 0.783 -> 0.427, every parameter ≈ -5: the model taken over."""
    result = attacked(kits, transport, tmp_path, Lying(TaskKind.FIT, weighted(1e12, 5.0)).handle)
    assert_served(result, without_attacker, attacker_trains=False)
    assert all("[malformed_update]" in r and "aggregation weight is not the one its example "
               "count gives" in r for r in rejections(result))
    assert max(abs(a).max() for a in result.history.params.values()) < 2


def test_a_negative_weight_is_refused_not_acknowledged(kits, transport, tmp_path,
                                                        without_attacker, caplog):
    """Was: acked as accepted, the round aborted, the store listed it as accepted."""
    caplog.set_level(logging.INFO)
    recorder = recorder_at(tmp_path / "fedsilo.db", tmp_path)
    result = attacked(kits, transport, tmp_path, Lying(TaskKind.FIT, weighted(-1e30)).handle,
                      recorder)
    recorder.finish()
    assert_served(result, without_attacker, attacker_trains=False)
    told = [r.message for r in caplog.records
            if "reply refused" in r.message and "/fit/" + ATTACKER in r.message]
    assert len(told) == ROUNDS and all("aggregation weight" in m for m in told)
    stored = RunStore(tmp_path / "fedsilo.db").run("attacked")
    mine = [p for p in stored["participation"] if p["institution"] == ATTACKER]
    assert len(mine) == ROUNDS and all(p["status"] == "rejected" and "aggregation weight"
                                       in p["reason"] for p in mine)


# --- preprocessing statistics -------------------------------------------------------------

def statistics(change: Callable[[dict], None]) -> Callable[[Reply], Reply]:
    def rewrite(r: Reply) -> Reply:
        stats = json.loads(json.dumps(r.payload["statistics"]))
        change(stats)
        return dataclasses.replace(r, payload={**r.payload, "statistics": stats})
    return rewrite


def nan_sums(stats: dict) -> None:
    n = stats["numeric"]["age"][0]
    stats["numeric"]["age"] = [n, math.nan, math.nan]


def fake_levels(stats: dict) -> None:
    stats["categories"]["cp"].update({f"fake-{i}": 1 for i in range(50_000)})


@pytest.mark.parametrize("change, reason", [
    (nan_sums, "column 'age' has a sum that is not finite"),
    (fake_levels, "column 'cp' has 50004 levels, more than 100 (data.max_levels)"),
], ids=["nan-sums", "50000-categories"])
def test_implausible_statistics_are_refused_for_the_whole_run(kits, transport, tmp_path,
                                                              without_attacker, change, reason):
    """Was: NaN sums made every institution's features NaN, no round trained, the server
    exited 0 with the untrained model; 50,000 fake categories grew the model from 15 to
    50,015 weights and made every round 3-5x slower for all."""
    result = attacked(kits, transport, tmp_path,
                      Lying(TaskKind.PREPARE, statistics(change)).handle)
    assert_served(result, without_attacker, attacker_trains=False)
    assert all(f"refused at the prepare stage (statistics: {reason})" in r
               for r in rejections(result))
    assert ATTACKER not in result.train_rows
    assert result.history.params["0.weight"].size == 15
    assert result.preprocessor.levels["cp"] == ("1", "2", "3", "4")
    # the preprocessing is the honest hospitals' alone: the model is theirs (up to the
    # order in which their updates arrived)
    for name, value in without_attacker.history.params.items():
        np.testing.assert_allclose(result.history.params[name], value, atol=1e-5)


# --- the Push manifest --------------------------------------------------------------------

class RawAttacker:
    """The attacker speaking the wire protocol itself: honest answers, except that a fit task
    is answered with `frames(task)`; keeps the Acks and counts the chunks gRPC read."""

    def __init__(self, kits: Path, port: int,
                 frames: Callable[[Task, RawAttacker], Iterator[bytes]]) -> None:
        self.honest, self.frames = real(ATTACKER), frames
        self.acks: list[pb.Ack] = []
        self.chunks_read: list[int] = []
        channel = grpc.secure_channel(f"localhost:{port}",
                                      client_credentials(kits / ATTACKER), OPTIONS)
        self.stub = Stub(channel)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            kind, meta, arrays = serde.decode(self.stub.Pull(pb.PullRequest(wait_seconds=1.0),
                                                             timeout=600))
            if kind == "shutdown":
                return
            if kind != "task":
                continue
            task = serde.task_from(meta, arrays)
            if task.kind is TaskKind.FIT:
                self.chunks_read.append(0)
                self.acks.append(self.stub.Push(self.frames(task, self), timeout=600))
            else:
                reply = self.honest.handle(task)
                self.stub.Push(serde.encode("reply", serde.reply_meta(reply), reply.update),
                               timeout=600)


def manifest(task: Task, arrays: list[pb.ArraySpec], total: int) -> bytes:
    meta = serde.reply_meta(Reply(task.task_id, ATTACKER, task.round, task.model_version, 100,
                                  None))
    return pb.Frame(envelope=pb.Envelope(kind="reply", json=json.dumps(
        {**meta, "has_update": True}), arrays=arrays, total_bytes=total)).SerializeToString()


def four_gib(task: Task, attacker: RawAttacker) -> Iterator[bytes]:
    """A manifest of 4 GiB, then 1 GiB of chunks (what gRPC asks for)."""
    yield manifest(task, [pb.ArraySpec(name="0.weight", dtype="<f4", shape=[1 << 30])],
                   4 << 30)
    chunk = bytes([serde.CHUNK_TAG]) + serde._varint(serde.CHUNK) + bytes(serde.CHUNK)
    for _ in range(1024):
        attacker.chunks_read[-1] += 1
        yield chunk


def too_big(task: Task, attacker: RawAttacker) -> Iterator[bytes]:
    """The model's names, one of them of shape [2^62, 4] (2^66 bytes; 0 in int64)."""
    arrays = [pb.ArraySpec(name=n, dtype=a.dtype.str, shape=[2**62, 4] if n == "0.weight"
                           else list(a.shape)) for n, a in task.params.items()]
    arrays.append(pb.ArraySpec(name=WEIGHT_KEY, dtype="<f8", shape=[1]))
    yield manifest(task, arrays, 8)


@pytest.mark.parametrize("frames, reason", [
    (four_gib, "reply manifest differs from what the task expects"),
    (too_big, "'0.weight' has shape [4611686018427387904, 4], the task expects [1, 15]"),
], ids=["4-GiB-manifest", "shape-2^62x4"])
def test_a_hostile_manifest_is_refused_before_any_allocation(kits, transport, tmp_path,
                                                             without_attacker, frames, reason):
    """Was: server memory 424 -> 1,456 MiB before the rejection; `array is too big`
    unhandled."""
    attacker = RawAttacker(kits, transport.port, frames)
    result = attacked(kits, transport, tmp_path, None)
    assert_served(result, without_attacker, attacker_trains=False)
    assert all("[malformed_update]" in r and reason in r for r in rejections(result))
    assert len(attacker.acks) == ROUNDS
    assert all(not a.accepted and a.code == "malformed_update" and reason in a.reason
               for a in attacker.acks)
    # refused on the envelope: of the 1,024 chunks offered, gRPC read at most what its
    # flow-control window holds before the refusal ended the call
    assert all(n < 128 for n in attacker.chunks_read), attacker.chunks_read


def test_a_manifest_of_4_gib_for_the_right_names_is_refused_by_its_size(
        kits, transport, tmp_path, without_attacker):
    def right_names(task: Task, attacker: RawAttacker) -> Iterator[bytes]:
        arrays = [pb.ArraySpec(name=n, dtype=a.dtype.str, shape=list(a.shape))
                  for n, a in task.params.items()]
        arrays[0] = pb.ArraySpec(name="0.weight", dtype="<f4", shape=[1, 1 << 30])
        arrays.append(pb.ArraySpec(name=WEIGHT_KEY, dtype="<f8", shape=[1]))
        yield manifest(task, arrays, 4 << 30)

    attacker = RawAttacker(kits, transport.port, right_names)
    result = attacked(kits, transport, tmp_path, None)
    assert_served(result, without_attacker, attacker_trains=False)
    assert all("'0.weight' has shape [1, 1073741824], the task expects [1, 15]" in r
               for r in rejections(result))
    assert len(attacker.acks) == ROUNDS


# --- §3: the default bound ----------------------------------------------------------------

def test_the_default_bound_keeps_one_institution_from_taking_the_model_over(
        kits, transport, tmp_path):
    """An update of +5 everywhere, with the attacker's true weight: accepted but scaled to
    5 × the round's median norm, every round. Without the bound the same attack drives every
    parameter below -4 (the takeover); with it they stay within 2 of 0."""
    plus_five = Lying(TaskKind.FIT, lambda r: weighted(
        float(r.num_examples), 5.0)(r)).handle
    result = attacked(kits, transport, tmp_path, plus_five)
    for e in result.history.events:
        assert ATTACKER in e.participants and "aborted" not in e.metrics
        assert e.metrics["aggregator"]["default_bounded"] == 1
    assert max(abs(a).max() for a in result.history.params.values()) < 2

    unbounded = heart(tmp_path, aggregation={"default_bound": False})
    control = run(unbounded, InProcessTransport({**{n: real(n) for n in HONEST},
                                                 ATTACKER: Lying(TaskKind.FIT, lambda r: weighted(
                                                     float(r.num_examples), 5.0)(r))}))
    assert max(a.max() for a in control.history.params.values()) < -4
