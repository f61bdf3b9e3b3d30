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
from typing import Any

import numpy as np
import pytest

from fedsilo.aggregation.secure.crypto import keypair
from fedsilo.aggregation.secure.identity import SimulatedCA
from fedsilo.client.institution import Institution
from fedsilo.config.vertical import open_spec
from fedsilo.core.messages import Rejection, Reply, Task
from fedsilo.engine.vertical import run_vertical_session
from fedsilo.errors import AggregationError, MalformedUpdate
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
    return server, tables, arbiters, outcome


def test_the_run_trains(observed) -> None:
    *_, outcome = observed
    assert outcome.shared == 736
    assert outcome.metrics["vertical"]["accuracy"] > 0.75


def test_the_server_sees_no_id_feature_or_label(observed) -> None:
    server, tables, *_ = observed
    blob = server.seen()
    needles = [x.encode() for x in tables["hospital"]["patient_id"].astype(str)[:50]]
    rng = np.random.default_rng(0)
    for table in tables.values():
        values = table.drop(columns=["patient_id"]).to_numpy(np.float64)
        for i, j in zip(rng.integers(0, len(values), 20), rng.integers(0, values.shape[1], 20)):
            if np.isfinite(values[i, j]) and values[i, j] not in (0.0, 1.0):
                needles.append(np.float64(values[i, j]).tobytes())  # 4-byte needles would
            needles.append(values[i].astype(np.float32).tobytes()[:12])  # match by chance
    labels = tables["hospital"]["num"].to_numpy()
    needles += [labels[:8].astype(t).tobytes() for t in (np.float64, np.float32, np.int64)]
    needles += [(labels[:8] > 0).astype(t).tobytes() for t in (np.float64, np.float32)]
    for needle in needles:
        assert needle not in blob


def test_the_arbiter_cannot_decrypt_what_it_relays(observed) -> None:
    server, _, arbiters, _ = observed
    arbiter = arbiters[0]
    relayed = [r.update[k] for r in server.replies for k in (r.update or {})
               if k == "forward" or k.startswith("residual.")]
    assert relayed
    for blob in relayed[:4]:  # [[X_h w_h]] and [[d]], sealed to the label holder / holder
        with pytest.raises(MalformedUpdate):
            arbiter.decrypt_masked(blob.tobytes(), 64, 1)
    # what it may decrypt, the masked gradients, it can
    masked = next(r for r in server.replies if r.update and "masked.0" in r.update)
    block, blocks = masked.payload["layout"][0]
    assert arbiter.decrypt_masked(masked.update["masked.0"].tobytes(), block, blocks).shape


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
