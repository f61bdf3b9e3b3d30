"""SecAgg+ through the real round loop: the unmasked sum equals the plain one to fixed-point
precision, one masked vector looks uniform, dropouts up to the tolerance at every stage are
recovered with the dropped inputs excluded exactly, below threshold the round aborts, and
tampered or replayed shares are detected."""

import dataclasses
import logging

import numpy as np
import pytest
from scipy import stats

from fedsilo.aggregation.base import find_staged
from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.secure.secaggplus import SecAggPlus, b64, ring_graph, unb64
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.client.client import Client
from fedsilo.client.models import build_model
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.core.messages import ErrorInfo, Reply, Task, TaskKind
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from fedsilo.transport.inprocess import InProcessTransport
from tests.algorithms.test_fedavg_math import binary_data

CFG = {"epochs": 2, "batch_size": 16, "lr": 0.1}
N, T = 7, 4  # 7 institutions, complete graph (k = 6), threshold 4: tolerates 2 dropouts


def secure(neighbours=None, threshold=T):
    protocol = "secagg" if neighbours is None else "secagg+"
    return {"layer": "mean", "weighted": True,
            "secure": {"protocol": protocol, "threshold": threshold, "neighbours": neighbours}}


class DropAt:
    """An institution that stops answering at one step of the round (a dropout)."""

    def __init__(self, client: Client, step: str, rounds=(1,)):
        self.client, self.step, self.rounds = client, step, rounds

    def handle(self, task: Task) -> Reply:
        step = task.stage.stage if task.kind is TaskKind.STAGE else task.kind.value
        if step == self.step and task.round in self.rounds:
            return Reply(task.task_id, self.client.client_id, task.round, task.model_version,
                         0, error=ErrorInfo("transport_error", "connection lost"))
        return self.client.handle(task)


def run(names, spec, drop=None, rounds=1, wrap=None):
    strategy = dataclasses.replace(fedavg(CFG), aggregator=build_aggregator(spec))
    model = build_model("logistic_regression", 6, 1, "binary", seed=3)
    handlers = {}
    for name in names:
        k = int("".join(c for c in name if c.isdigit()))  # an institution's data is its own
        client = Client(name, TorchTrainer(model, binary_data(40 + 7 * k, k)),
                        build_aggregator(spec))
        handlers[name] = client
        if drop and name in drop:
            handlers[name] = DropAt(client, drop[name])
        if wrap and name in wrap:
            handlers[name] = wrap[name](client)
    initial = next(iter(handlers.values()))
    initial = (initial.client if isinstance(initial, DropAt) else initial).trainer
    history = train(strategy, InProcessTransport(handlers), initial.initial_params(),
                       RunSettings("r", 5, rounds))
    return history


NAMES = [f"inst{i}" for i in range(N)]
PRECISION = 1e-5


def assert_same(a, b):
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], atol=PRECISION, rtol=0)


@pytest.mark.parametrize("neighbours", [None, 6])
def test_secure_sum_equals_plain_sum(neighbours):
    plain = run(NAMES, {"layer": "mean", "weighted": True}, rounds=2)
    safe = run(NAMES, secure(neighbours), rounds=2)
    assert_same(safe, plain)
    assert safe.events[-1].metrics["aggregator"]["secagg_dropouts"] == 0


def test_sparse_graph_secagg_plus():
    names = [f"i{i:02d}" for i in range(12)]
    plain = run(names, {"layer": "mean", "weighted": True})
    safe = run(names, secure(neighbours=4, threshold=3))
    assert_same(safe, plain)
    graph = ring_graph(names, 4, 1)
    assert all(len(v) == 4 for v in graph.values())
    assert all(u in graph[v] for u in names for v in graph[u])  # symmetric


@pytest.mark.parametrize("step", ["advertise", "share", "fit", "unmask"])
def test_maximum_dropouts_at_each_step_are_recovered_exactly(step):
    dropped = {"inst2": step, "inst5": step}  # n - t - 1 = 2 is the most tolerated
    safe = run(NAMES, secure(), drop=dropped)
    if step == "unmask":  # their inputs arrived before they dropped: they count
        expected = run(NAMES, {"layer": "mean", "weighted": True})
        assert safe.events[0].participants == tuple(NAMES)
    else:  # dropped before their input arrived: excluded exactly
        expected = run([n for n in NAMES if n not in dropped], {"layer": "mean",
                                                                  "weighted": True})
    assert safe.events[0].version == 1 and "aborted" not in safe.events[0].metrics
    assert_same(safe, expected)


@pytest.mark.parametrize("step", ["advertise", "share", "unmask"])
def test_below_threshold_the_round_aborts_and_nothing_is_applied(step):
    dropped = {n: step for n in ("inst1", "inst2", "inst3")}
    history = run(NAMES, secure(), drop=dropped)
    event = history.events[0]
    assert event.version == 0 and "secagg+" in event.metrics["aborted"]
    plain_start = run(NAMES, {"layer": "mean", "weighted": True}, rounds=1)
    assert not np.allclose(history.params["0.weight"], plain_start.params["0.weight"])


def test_one_masked_vector_is_uniform_and_uncorrelated_with_the_input():
    layer = build_aggregator(secure())
    staged = find_staged(layer)
    contexts = {n: {} for n in NAMES}
    from fedsilo.aggregation.base import Accumulator  # noqa: F401

    spec = {"w": np.zeros(20_000, np.float32)}
    from fedsilo.core.params import spec_of

    acc = layer.zero(spec_of(spec))
    staged.begin(acc, 1, 42, NAMES)
    alive = NAMES
    for stage in staged.pre_stages:
        requests = staged.stage_requests(stage, acc, alive)
        answers = {n: staged.stage_check(stage, acc, n, staged.stage_respond(
            stage, requests[n], contexts[n], n)) for n in alive}
        alive = staged.stage_collect(stage, acc, answers)
    x = np.linspace(-1, 1, 20_000).astype(np.float32)  # a structured input
    y = layer.encode({"w": x}, 10, staged.fit_config(acc, "inst0"), contexts["inst0"])["w"]
    u = y.astype(np.float64) / 2.0**64
    assert stats.kstest(u, "uniform").pvalue > 0.001
    bits = np.unpackbits(y.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(u, x)[0, 1]) < 0.05


def tamper(kind):
    """Corrupt one sealed share ('corrupt') or replay one from another round ('replay')."""

    class Tamper:
        def __init__(self, client):
            self.client, self.saved = client, {}

        def handle(self, task):
            reply = self.client.handle(task)
            if task.kind is TaskKind.STAGE and task.stage.stage == "share":
                shares = dict(reply.payload["stage"]["shares"])
                victim = sorted(shares)[0]
                if kind == "corrupt":
                    raw = bytearray(unb64(shares[victim]))
                    raw[-1] ^= 1
                    shares[victim] = b64(bytes(raw))
                elif task.round == 1:
                    self.saved = dict(shares)
                else:
                    shares[victim] = self.saved[victim]
                reply = dataclasses.replace(reply, payload={"stage": {"shares": shares}})
            return reply

    return Tamper


@pytest.mark.parametrize("kind", ["corrupt", "replay"])
def test_tampered_or_replayed_shares_are_detected(kind, caplog):
    caplog.set_level(logging.WARNING)
    rounds = 1 if kind == "corrupt" else 2
    safe = run(NAMES, secure(), rounds=rounds, wrap={"inst3": tamper(kind)})
    plain = run(NAMES, {"layer": "mean", "weighted": True}, rounds=rounds)
    detected = [r.message for r in caplog.records if "failed authentication" in r.message]
    assert detected and all("from inst3 to" in m for m in detected)
    assert_same(safe, plain)  # enough honest shares: the round still completes exactly


def test_configuration_is_checked():
    with pytest.raises(ConfigError, match="threshold must be >= 2"):
        SecAggPlus(1)
    with pytest.raises(ConfigError, match="must exceed half"):
        run(NAMES, secure(threshold=2))


@pytest.mark.parametrize("n,k,want", [(12, 3, 3), (100, 3, 3), (12, 5, 5), (11, 3, 4),
                                      (11, 4, 4)])
def test_ring_graph_gives_k_neighbours_symmetrically(n, k, want):
    names = [f"i{i:03d}" for i in range(n)]
    graph = ring_graph(names, k, 7)
    assert all(len(v) == want for v in graph.values())
    assert all(u in graph[v] for u in names for v in graph[u])
    assert all(u not in graph[u] for u in names)


def test_odd_neighbourhood_secagg_plus_equals_plain_sum():
    names = [f"i{i:02d}" for i in range(12)]
    assert_same(run(names, secure(neighbours=3, threshold=2)),
                run(names, {"layer": "mean", "weighted": True}))


def test_a_32_bit_ring_sums_to_its_stated_precision_and_refuses_what_cannot_fit():
    spec = secure(neighbours=4, threshold=3)
    spec["secure"].update(ring_bits=32, frac_bits=14, max_abs=256.0)  # weights fit too
    names = [f"i{i:02d}" for i in range(8)]
    safe = run(names, spec, rounds=2)
    plain = run(names, {"layer": "mean", "weighted": True}, rounds=2)
    layer = build_aggregator(spec)
    assert layer.inner.encoded_spec({"w": plain.params["0.weight"]})["w"].dtype == np.uint32
    for name in plain.params:  # 2^-14 per weighted value, two rounds
        np.testing.assert_allclose(safe.params[name], plain.params[name], atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="32-bit ring"):
        build_aggregator({**spec, "secure": {**spec["secure"], "max_abs": 2.0**20}})
