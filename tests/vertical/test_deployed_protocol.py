"""The deployed vertical protocol (engine/vertical.py and client/vertical_party.py) attacked
by the server that relays it. Threat model: a curious server, which is also Hetero-LR's
arbiter (it holds the CKKS secret key), and semi-honest parties; the parties' channel keys are
signed with their kits' identity keys (here a simulated CA's).

The server sees no ID, feature value or label; it cannot decrypt the ciphertexts it relays
(they are sealed to their receiver); it cannot put its own key in a party's place, nor replay
a message at another step."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.aggregation.secure.crypto import keypair
from fedsilo.aggregation.secure.identity import SimulatedCA
from fedsilo.client.institution import Institution
from fedsilo.config.vertical import open_spec
from fedsilo.core.messages import Rejection, Reply, Task
from fedsilo.engine.vertical import run_vertical_session
from fedsilo.errors import AggregationError, MalformedUpdate, ProtocolError
from fedsilo.simulation.institutions import load_tables
from fedsilo.transport.inprocess import InProcessTransport
from fedsilo.vertical import hetero_lr
from fedsilo.vertical import stages as st
from tests.simulation.test_vertical_run import config

Tamper = Callable[[Task], Task]


class CuriousServer(InProcessTransport):
    """The in-process transport, recording every task and reply that crosses it, and letting
    a test alter tasks before the party sees them."""

    def __init__(self, institutions: dict[str, Institution], tamper: Tamper | None = None):
        super().__init__(institutions)
        self.tasks: list[Task] = []
        self.replies: list[Reply] = []
        self._tamper = tamper

    def dispatch(self, tasks: Sequence[Task]) -> None:
        tasks = [self._tamper(t) if self._tamper else t for t in tasks]
        self.tasks += tasks
        super().dispatch(tasks)

    def poll(self, timeout: float | None = None) -> Iterator[Reply]:
        for reply in super().poll(timeout):
            self.replies.append(reply)
            yield reply

    def acknowledge(self, reply: Reply, rejection: Rejection | None) -> None:
        pass

    def seen(self) -> bytes:
        """Every byte the server saw: arrays and JSON of every task and reply."""
        parts = []
        for t in self.tasks:
            parts += [a.tobytes() for a in t.params.values()]
            parts.append(json.dumps(t.stage.payload, default=str).encode())
        for r in self.replies:
            parts += [a.tobytes() for a in (r.update or {}).values()]
            parts.append(json.dumps(r.payload, default=str).encode())
        return b"".join(parts)


def federation(epochs: int = 1) -> tuple[Any, dict[str, Institution], dict[str, Any]]:
    cfg = config("logistic_regression", epochs=epochs)
    tables = load_tables(cfg)
    ca = SimulatedCA()
    return cfg, {n: Institution(n, t, keys=ca.keys(n)) for n, t in tables.items()}, tables


@pytest.fixture(scope="module")
def observed() -> tuple[CuriousServer, dict[str, Any], list[Any], Any]:
    arbiters: list[Any] = []
    init = hetero_lr.Arbiter.__init__

    def keep(self: Any, *args: Any, **kwargs: Any) -> None:  # the server's arbiter, to attack
        init(self, *args, **kwargs)
        arbiters.append(self)

    hetero_lr.Arbiter.__init__ = keep  # type: ignore[method-assign]
    try:
        cfg, institutions, tables = federation()
        server = CuriousServer(institutions)
        outcome = run_vertical_session(open_spec(cfg), server, "run-curious")
    finally:
        hetero_lr.Arbiter.__init__ = init  # type: ignore[method-assign]
    parties = {n: i._vertical_runs["run-curious"] for n, i in institutions.items()}
    return server, parties, arbiters, outcome


def test_the_run_trains(observed) -> None:
    *_, outcome = observed
    assert outcome.shared == 736
    assert outcome.metrics["vertical"]["accuracy"] > 0.75


def test_the_server_sees_no_id_feature_or_label(observed) -> None:
    """Every byte the server saw, searched for what the parties hold as the protocol uses it:
    IDs, standardised columns (rows of float32 and float64 values) and labels in the common
    order (0/1, ±1, float32 and float64)."""
    server, parties, *_ = observed
    blob = server.seen()
    needles = [x.encode() for x in parties["hospital"].ids[:50]]
    rng = np.random.default_rng(0)
    for party in parties.values():
        x = np.vstack([party.x_train, party.x_test])
        for i in rng.integers(0, len(x), 30):
            needles += [x[i].astype(np.float32).tobytes()[:12],
                        x[i].astype(np.float64).tobytes()[:16]]
    y = parties["hospital"].y_train
    for start in rng.integers(0, len(y) - 8, 10):
        for labels in (y[start:start + 8], 2 * y[start:start + 8] - 1):
            needles += [labels.astype(t).tobytes() for t in (np.float64, np.float32)]
    assert len(needles) > 200
    for needle in needles:
        assert needle not in blob


def test_the_arbiter_cannot_decrypt_what_it_relays(observed) -> None:
    server, parties, arbiters, _ = observed
    arbiter = arbiters[0]
    rows = 64  # the batch size: a ciphertext holds slots // rows copies of the batch
    layout = (rows, arbiter.params.slots // rows)
    relayed = [r.update[k] for r in server.replies for k in (r.update or {})
               if k == "forward" or k.startswith("residual.")]
    assert len(relayed) > 10
    for blob in relayed:  # [[X_h w_h]] and [[d]], sealed to their receiver
        with pytest.raises(MalformedUpdate, match="not a CKKS vector"):
            arbiter.decrypt_masked(blob.tobytes(), *layout)
    # the control: the same ciphertext unsealed is one the arbiter decrypts
    lab = parties["laboratory"]
    unsealed = hetero_lr.FeatureHolder("laboratory", lab.x_train, arbiter.public_context())
    unsealed.w = np.ones(unsealed.w.shape)
    plain = unsealed.forward(np.arange(rows), "hospital").payload
    sums = arbiter.decrypt_masked(plain, *layout)
    assert sums[0] == pytest.approx(float(lab.x_train[:rows].sum()), abs=1e-3)


def test_a_server_putting_its_own_channel_key_in_a_partys_place_is_refused() -> None:
    _, forged = keypair()

    def swap(task: Task) -> Task:
        if task.body is not None and task.stage.stage == st.PEERS:
            keys = dict(task.stage.payload["keys"])
            keys["laboratory"] = {**keys["laboratory"], "public": forged.hex()}
            task.stage.payload["keys"] = keys  # type: ignore[index]
        return task

    cfg, institutions, _ = federation()
    with pytest.raises(AggregationError, match="not signed by its certificate's key"):
        run_vertical_session(open_spec(cfg), CuriousServer(institutions, swap), "run-swap")


def test_a_message_replayed_at_another_step_is_refused() -> None:
    first: dict[str, np.ndarray] = {}

    def replay(task: Task) -> Task:
        if task.body is not None and task.stage.stage == st.HLR_RESIDUAL:
            step = task.stage.payload["step"]
            if step == 0:
                first.update({k: v for k, v in task.params.items() if k.startswith("forward")})
            elif step == 1:
                task.params.update(first)  # type: ignore[attr-defined]
        return task

    cfg, institutions, _ = federation()
    with pytest.raises(AggregationError, match="failed authentication"):
        run_vertical_session(open_spec(cfg), CuriousServer(institutions, replay), "run-replay")


class Replayer(Institution):
    """An institution whose tasks the server replays: each task of `stage` is answered, then
    handed over once more (as a relay re-sending the same sealed message would)."""

    def __init__(self, *args: Any, stage: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = stage
        self.second: list[Reply] = []

    def handle(self, task: Task) -> Reply:
        reply = super().handle(task)
        if task.body is not None and task.stage.stage == self.stage and not self.second:
            self.second.append(super().handle(task))
        return reply


@pytest.mark.parametrize("stage", [st.HLR_FORWARD, st.HLR_GRADIENT, st.PEERS])
def test_a_stage_answered_twice_is_refused_the_second_time(stage: str) -> None:
    cfg, institutions, tables = federation()
    ca = SimulatedCA()
    institutions = {n: Institution(n, t, keys=ca.keys(n)) for n, t in tables.items()}
    lab = Replayer("laboratory", tables["laboratory"], keys=ca.keys("laboratory"), stage=stage)
    institutions["laboratory"] = lab
    run_vertical_session(open_spec(cfg), InProcessTransport(institutions), "run-twice")
    assert lab.second and lab.second[0].error is not None
    assert "out of order" in lab.second[0].error.reason


def test_a_forward_without_the_arbiters_sums_is_refused() -> None:
    def drop(task: Task) -> Task:
        if task.body is not None and task.stage.stage == st.HLR_FORWARD:
            for k in [k for k in task.params if k.startswith("sums.")]:
                del task.params[k]  # type: ignore[attr-defined]
        return task

    cfg, institutions, _ = federation()
    with pytest.raises(AggregationError, match="the arbiter's sums are missing"):
        run_vertical_session(open_spec(cfg), CuriousServer(institutions, drop), "run-drop")


class Forger(Institution):
    """A party with a valid kit that answers a stage with a reply of its own making."""

    def __init__(self, *args: Any, stage: str, forge: Callable[[Reply], Reply],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage, self.forge = stage, forge

    def handle(self, task: Task) -> Reply:
        reply = super().handle(task)
        if task.body is not None and task.stage.stage == self.stage:
            return self.forge(reply)
        return reply


@pytest.mark.parametrize("stage, forge, reason", [
    # the residual it received, sent back for decryption in one block of every slot: the
    # arbiter would return the residuals (and so the labels) in the clear
    (st.HLR_GRADIENT, lambda r: replace(r, payload={"layout": [[1, 4096]]}),
     "another layout than the protocol's"),
    (st.HLR_GRADIENT, lambda r: replace(r, update=None), "did not send"),
    (st.PREDICT, lambda r: replace(r, update=None), "did not send"),
    (st.RESPOND, lambda r: replace(r, update={"double": r.update["double"]}), "did not send"),
])
def test_a_member_sending_a_malformed_reply_stops_the_run_with_a_reason(
        stage: str, forge: Callable[[Reply], Reply], reason: str) -> None:
    cfg, institutions, tables = federation()
    ca = SimulatedCA()
    institutions = {"hospital": Institution("hospital", tables["hospital"],
                                            keys=ca.keys("hospital")),
                    "laboratory": Forger("laboratory", tables["laboratory"],
                                         keys=ca.keys("laboratory"), stage=stage, forge=forge)}
    with pytest.raises(ProtocolError, match=reason):
        run_vertical_session(open_spec(cfg), InProcessTransport(institutions), "run-forged")


@pytest.mark.parametrize("mangle, said", [
    (lambda t: pd.concat([t, t.iloc[[5]]]), "occur more than once"),  # a duplicated ID
    (lambda t: t.assign(patient_id=t["patient_id"].str.replace("-", "")), "have the shape"),
])
def test_a_psi_refusal_reaches_the_server_without_the_ids_it_quotes(mangle, said) -> None:
    """The party's own message names example IDs (for its log and console); the reason it
    sends out names only counts and the IDs' shape."""
    cfg, _, tables = federation()
    ca = SimulatedCA()
    tables = {**tables, "laboratory": mangle(tables["laboratory"])}
    institutions = {n: Institution(n, t, keys=ca.keys(n)) for n, t in tables.items()}
    with pytest.raises(AggregationError, match=said) as refused:
        run_vertical_session(open_spec(cfg), InProcessTransport(institutions), "run-psi")
    reason = str(refused.value)
    quoted = set(tables["laboratory"]["patient_id"]) | set(tables["hospital"]["patient_id"])
    assert not any(x in reason for x in quoted), reason
