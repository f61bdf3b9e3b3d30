"""SecAgg+ against a misbehaving institution or server. Each test mounts the attack: what the
protocol used to let through (a malformed reply ending the whole run with a KeyError, an
institution revealing both secrets of a neighbour when asked twice, a threshold that did not
exceed half of the k + 1 neighbours odd n and odd k give, a server putting its own X25519 keys
in place of an institution's) and what happens now (the sender is a recorded dropout and the
round completes with the others; the request is refused; the round aborts before any share is
sealed or mask computed with the substituted key)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.aggregation.secure import crypto, identity, shamir
from fedsilo.aggregation.secure.identity import Credentials, SimulatedCA, kit_keys
from fedsilo.aggregation.secure.payloads import Advert, b64, unb64
from fedsilo.aggregation.secure.secaggplus import MASK, SHARE, SecAggPlus, _aad, ring_graph
from fedsilo.aggregation.secure.threshold import check_cohort, neighbourhood
from fedsilo.client.factory import ModelCache
from fedsilo.client.institution import Institution
from fedsilo.config.build import build_schema
from fedsilo.config.schema import RunConfig, load_config, parse_config
from fedsilo.core.messages import ErrorInfo, Reply, Task, TaskKind
from fedsilo.core.params import ArraySpec
from fedsilo.engine.flow import RunHistory
from fedsilo.errors import ConfigError, ProtocolError, SecureAggregationAborted
from fedsilo.session import run_session
from fedsilo.simulation.institutions import load_tables
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.inprocess import Handler, InProcessTransport
from tests.conftest import EXAMPLES

HEART = EXAMPLES / "heart_disease" / "heart_disease.toml"
ROGUE = "va-long-beach"
PRECISION = 1e-5  # fixed point, 2^-24 per weighted value


# whole rounds: the four hospitals on their own data ----------------------------------------

def heart(secure: bool) -> RunConfig:
    cfg = load_config(HEART)
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=1, compare=False)
    if secure:  # t = 2 of k = 3: one institution may drop at any step
        raw["aggregation"] = {**raw.get("aggregation", {}), "secure": "secagg+",
                              "threshold": 2, "neighbours": 3}
    return parse_config(raw, cfg.base_dir)


@functools.cache
def tables() -> dict[str, pd.DataFrame]:
    return load_tables(heart(False))


def session(secure: bool, keys: Mapping[str, Mapping[str, bytes]], server_keys: dict,
            wrap: Mapping[str, Callable[[Institution], Handler]] | None = None,
            transport: type[InProcessTransport] = InProcessTransport) -> RunHistory:
    cfg, models = heart(secure), ModelCache()
    handlers: dict[str, Handler] = {}
    for name, table in tables().items():
        institution = Institution(name, table, models, keys=keys.get(name, {}))
        handlers[name] = (wrap or {}).get(name, lambda i: i)(institution)
    schema = build_schema(cfg, next(iter(tables().values())))
    history = run_session(cfg, transport(handlers), schema, "attack", keys=server_keys).history
    assert isinstance(history, RunHistory)
    return history


def simulated_session(**kwargs: Any) -> RunHistory:
    ca = SimulatedCA()
    return session(True, {n: ca.keys(n) for n in tables()}, ca.trust_keys(), **kwargs)


class Rewrite:
    """An institution whose answer to one step is rewritten (a buggy or malicious one)."""

    def __init__(self, inner: Handler, step: str, change: Callable[[dict], Any]) -> None:
        self.inner, self.step, self.change = inner, step, change

    def handle(self, task: Task) -> Reply:
        reply = self.inner.handle(task)
        if task.kind is TaskKind.STAGE and task.stage.stage == self.step:
            return dataclasses.replace(reply, payload={"stage": self.change(
                dict(reply.payload["stage"]))})
        return reply


class SendsNoUpdate:
    """An institution that takes part in preprocessing but fails every fit."""

    def __init__(self, inner: Handler) -> None:
        self.inner = inner

    def handle(self, task: Task) -> Reply:
        if task.kind is not TaskKind.FIT:
            return self.inner.handle(task)
        return Reply(task.task_id, task.client_id, task.round, task.model_version, 0,
                     error=ErrorInfo("client_training_error", "no update"))


class TakesNoPart(SendsNoUpdate):
    """An institution refused from the start: no statistics, no update."""

    def handle(self, task: Task) -> Reply:
        return Reply(task.task_id, task.client_id, task.round, task.model_version, 0,
                     error=ErrorInfo("protocol_error", "not one of the consortium"))


@functools.cache
def plain(without: str | None, from_the_start: bool = False) -> RunHistory:
    """Plain FedAvg with the same preprocessing, the sum of every update but `without`'s
    (`from_the_start`: it sent no preprocessing statistics either)."""
    wrapper = TakesNoPart if from_the_start else SendsNoUpdate
    return session(False, {}, {}, {without: wrapper} if without else None)


def assert_same(a: RunHistory, b: RunHistory) -> None:
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], atol=PRECISION, rtol=0)


def without(key: str) -> Callable[[dict], dict]:
    return lambda answer: {k: v for k, v in answer.items() if k != key}


def replaced(key: str, value: Any) -> Callable[[dict], dict]:
    return lambda answer: {**answer, key: value}


@pytest.mark.parametrize("change,reason", [
    (without("c_pk"), "'c_pk' is missing"),
    (replaced("s_pk", b64(bytes(32))), "s_pk: secure aggregation: bad public key"),  # low order
    (replaced("c_pk", b64(bytes(31))), "c_pk is 31 bytes, expected 32")],
    ids=["missing c_pk", "low-order s_pk", "31-byte c_pk"])
def test_a_malformed_advertisement_makes_its_sender_a_dropout(change, reason):
    """Before: rnd.keys = {u: (r["c_pk"], r["s_pk"])} raised KeyError out of the run (and a
    bad key failed later, inside an honest neighbour). Now the server checks every
    advertisement; the round goes on with the three others, exactly."""
    history = simulated_session(wrap={ROGUE: lambda i: Rewrite(i, "advertise", change)})
    event = history.events[0]
    assert event.version == 1 and "aborted" not in event.metrics
    assert sorted(event.participants) == sorted(set(tables()) - {ROGUE})
    assert "protocol_error" in event.rejected[ROGUE] and reason in event.rejected[ROGUE]
    assert_same(history, plain(ROGUE))


def test_a_malformed_unmask_reply_is_dropped_and_the_round_completes_with_every_input():
    """Before: int(y, 16) raised ValueError out of the run. Now the reply is refused with its
    reason; the input of its sender arrived before, and the three other survivors' shares
    unmask the sum of all four."""
    def bad_hex(answer: dict) -> dict:
        return {**answer, "b": {v: (x, "zz") for v, (x, _) in answer["b"].items()}}

    history = simulated_session(wrap={ROGUE: lambda i: Rewrite(i, "unmask", bad_hex)})
    event = history.events[0]
    assert event.version == 1 and sorted(event.participants) == sorted(tables())
    assert "is not a share (hex below 2^521 - 1)" in event.rejected[ROGUE]
    assert_same(history, plain(None))


# the test plays the server: a round driven by hand ----------------------------------------

NAMES = ["i0", "i1", "i2", "i3"]
VICTIM = "i1"
SIZE = 64


class Harness:
    """One round of the layer: the server half driven by the test (honest unless the test
    says otherwise), each institution's client half with its own private context."""

    def __init__(self, names: list[str] = NAMES, threshold: int = 2,
                 neighbours: int | None = None) -> None:
        self.layer, self.names = SecAggPlus(threshold, neighbours), names
        self.ctx: dict[str, dict[str, Any]] = {n: {} for n in names}
        self.acc = self.layer.zero({"w": ArraySpec((SIZE,), np.dtype(np.float32))})
        self.layer.begin(self.acc, 1, 7, names)

    def respond(self, stage: str, payload: Mapping[str, Any], name: str) -> dict:
        return self.layer.stage_respond(stage, payload, self.ctx[name], name)

    def stage(self, stage: str, alive: list[str]) -> list[str]:
        requests = self.layer.stage_requests(stage, self.acc, alive)
        answers = {n: self.layer.stage_check(stage, self.acc, n,
                                             self.respond(stage, requests[n], n))
                   for n in alive}
        return self.layer.stage_collect(stage, self.acc, answers)

    def fit(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every institution's input and the masked vector it sends."""
        inputs = {n: np.random.default_rng(i).uniform(-1, 1, SIZE).astype(np.float32)
                  for i, n in enumerate(self.names)}
        sent = {n: self.layer.encode({"w": x}, 1, self.layer.fit_config(self.acc, n),
                                     self.ctx[n])["w"].copy() for n, x in inputs.items()}
        return inputs, sent

    def unmask(self, name: str, survivors: list[str], dropped: list[str]) -> dict:
        return self.respond("unmask", {"round": 1, "threshold": 2, "survivors": survivors,
                                       "dropped": dropped}, name)

    @property
    def server(self) -> Any:
        return self.acc.extra["secagg"]


def ready(h: Harness) -> Harness:
    h.stage("advertise", h.names)
    h.stage("share", h.names)
    return h


def unmasked(h: Harness, victim: str, y: np.ndarray, b: bytes, s: bytes) -> np.ndarray:
    """The victim's input from what it sent, its self-mask seed b and its mask key s."""
    scratch = np.empty_like(y)
    x = y - crypto.expand_mask(b, scratch)
    sk = crypto.private_from(s)
    for u in h.layer.fit_config(h.acc, victim)["secagg"]["peers"]:
        mask = crypto.expand_mask(crypto.agree(sk, h.server.adverts[u].s_pk, MASK), scratch)
        x = x - mask if victim < u else x + mask
    return h.layer.fixed.decode(x)


def rebuild(answers: Mapping[str, dict], kind: str, victim: str) -> bytes:
    return shamir.combine([(x, int(y, 16)) for x, y in
                           (a[kind][victim] for a in answers.values())], 2)


def test_an_institution_answers_one_unmask_request_per_round():
    """A server asks the victim's neighbours for its self-mask seed (victim survived), then
    asks again calling it a dropout, for its mask key. Before, institutions kept no record
    and answered: with both secrets the server unmasked the victim's input alone. Now the
    second request is refused by every neighbour."""
    h = ready(Harness())
    inputs, sent = h.fit()
    others = [n for n in NAMES if n != VICTIM]
    first = {u: h.unmask(u, [v for v in NAMES if v != u], []) for u in others}

    def again(u: str) -> dict:
        return h.unmask(u, [v for v in NAMES if v not in (u, VICTIM)], [VICTIM])

    for u in others:
        with pytest.raises(ProtocolError, match="'unmask' was already answered"):
            again(u)
    b = rebuild(first, "b", VICTIM)
    assert not any(a["s"] for a in first.values())  # and no share of its mask key
    for u in others:  # what a client without that record (the code before) gave away
        h.ctx[u]["secagg_answered"].discard("unmask")
    second = {u: again(u) for u in others}
    s = rebuild(second, "s", VICTIM)
    np.testing.assert_allclose(unmasked(h, VICTIM, sent[VICTIM], b, s), inputs[VICTIM],
                               atol=PRECISION)


def test_a_request_for_both_secrets_of_a_peer_is_refused():
    h = ready(Harness())
    h.fit()
    with pytest.raises(ProtocolError, match=r"both secrets of \['i1'\]"):
        h.unmask("i0", ["i1", "i2", "i3"], ["i1"])
    with pytest.raises(ProtocolError, match="already answered"):  # one request per round
        h.unmask("i0", ["i1", "i2", "i3"], [])


def test_an_unmask_request_naming_too_few_survivors_reveals_nothing():
    """Fewer than t surviving neighbours: the round cannot unmask; nothing is revealed."""
    h = ready(Harness())
    h.fit()
    with pytest.raises(ProtocolError, match="1 neighbours survived, fewer than the threshold"):
        h.unmask("i0", ["i1"], ["i2", "i3"])


MALFORMED = {  # stage: (change to i0's honest answer, the reason given)
    "advertise": [
        (lambda a: ["c_pk"], "is not a mapping of names"),
        (lambda a: {**a, "c_pk": 7}, "c_pk is not a text"),
        (lambda a: {**a, "c_pk": "***"}, "c_pk is not valid base64"),
        (lambda a: {**a, "cert": None}, "cert is not a text"),
        (lambda a: {**a, "cert": "x" * 9000}, "cert is not a text of at most 8192"),
        (lambda a: {k: v for k, v in a.items() if k != "sig"}, "'sig' is missing"),
        (lambda a: {**a, "cert": "hello"}, "is not one the consortium CA issued"),
        (lambda a: {**a, "sig": b64(bytes(64))}, "not signed by its certificate's key")],
    "share": [
        (lambda a: {}, "'shares' is missing"),
        (lambda a: {"shares": ["i1"]}, "is not a mapping of names"),
        (lambda a: {"shares": {**a["shares"], "stranger": b64(b"x")}}, "its neighbours are"),
        (lambda a: {"shares": {"i1": a["shares"]["i1"]}}, "its neighbours are"),
        (lambda a: {"shares": {**a["shares"], "i1": 5}}, "for 'i1' is not a text"),
        (lambda a: {"shares": {**a["shares"], "i1": b64(bytes(2000))}},
         "is not a text of at most 1368 characters")],
    "unmask": [
        (lambda a: {**a, "b": {"i1": [1, "zz"]}}, "is not a share"),
        (lambda a: {**a, "b": {"i1": [1, f"{shamir.PRIME:x}"]}}, "is not a share"),
        (lambda a: {**a, "b": {"i1": [1, "0x1f"]}}, "is not a share"),
        (lambda a: {**a, "b": {"i1": [9, "1f"]}}, "is at x = 9, not at its own x = 1"),
        (lambda a: {**a, "b": {"i1": [True, "1f"]}}, "is not an integer"),
        (lambda a: {**a, "b": {"i1": "1f"}}, "is not [x, y]"),
        (lambda a: {**a, "b": [["i1", 1, "1f"]]}, "is not a mapping of names"),
        (lambda a: {**a, "s": {"i1": [1, "1f"]}}, "reveals 's' shares of ['i1'], which were not"),
        (lambda a: {**a, "corrupt": {"stranger": "?"}}, "reports shares of institutions not")]}


@pytest.fixture(scope="module")
def answers() -> tuple[Harness, dict[str, dict]]:
    """A whole honest round, and i0's answer to each stage."""
    h, seen = Harness(), {}
    respond = h.respond

    def capture(stage: str, payload: Mapping[str, Any], name: str) -> dict:
        answer = respond(stage, payload, name)
        if name == "i0":
            seen[stage] = answer
        return answer

    h.respond = capture  # type: ignore[method-assign]
    ready(h)
    h.fit()
    h.stage("unmask", h.names)
    return h, seen


@pytest.mark.parametrize("stage,change,reason", [
    pytest.param(stage, change, reason, id=f"{stage}: {reason}")
    for stage, cases in MALFORMED.items() for change, reason in cases])
def test_every_malformed_reply_is_refused_with_its_reason(answers, stage, change, reason):
    """Wrong types, lengths, encodings, coordinates, names: all refused as a ProtocolError
    (before, most were a KeyError, TypeError or ValueError in the server)."""
    h, seen = answers
    h.layer.stage_check(stage, h.acc, "i0", seen[stage])  # the honest answer passes
    with pytest.raises(ProtocolError, match=re.escape(reason)):
        h.layer.stage_check(stage, h.acc, "i0", change(seen[stage]))


@pytest.mark.parametrize("n,k,want", [(5, 3, 4), (7, 5, 6), (6, 3, 3), (5, 4, 4), (5, 2, 2)])
def test_the_neighbourhood_is_the_one_the_ring_graph_gives(n, k, want):
    names = [f"i{i}" for i in range(n)]
    assert neighbourhood(n, k) == want
    assert {len(v) for v in ring_graph(names, k, 3).values()} == {want}


def test_odd_n_and_odd_k_need_a_threshold_above_half_of_k_plus_one():
    """5 institutions, k = 3: everyone has 4 neighbours. t = 2 used to pass (2 > 3/2), yet 2
    shares of b and 2 of s from 4 neighbours answering once each rebuild both secrets."""
    with pytest.raises(ConfigError, match=r"exceed half the neighbourhood \(4\): with 5 "
                                          r"institutions and 3 neighbours each"):
        check_cohort(2, 3, 5)
    assert check_cohort(3, 3, 5) == 4 and check_cohort(2, 3, 6) == 3


def test_a_dropout_that_makes_the_cohort_odd_aborts_instead_of_running_unsafe():
    """6 institutions, k = 3, t = 2 is safe; one fails to advertise, the 5 others would get 4
    neighbours each: the round aborts (an AggregationError: the run goes on)."""
    h = Harness([f"i{i}" for i in range(6)], threshold=2, neighbours=3)
    requests = h.layer.stage_requests("advertise", h.acc, h.names)
    answers = {n: h.layer.stage_check("advertise", h.acc, n,
                                      h.respond("advertise", requests[n], n))
               for n in h.names[:5]}
    with pytest.raises(SecureAggregationAborted, match="5 institutions advertised keys"):
        h.layer.stage_collect("advertise", h.acc, answers)


def test_an_institution_refuses_a_neighbourhood_its_threshold_does_not_protect():
    """A server that sets up t = 2 and relays 4 neighbours' keys (everyone of 5)."""
    h = Harness([f"i{i}" for i in range(5)], threshold=3)  # the server's graph: everyone
    h.stage("advertise", h.names)
    request = {**h.layer.stage_requests("share", h.acc, h.names)["i0"], "threshold": 2}
    assert len(request["peers"]) == 4
    with pytest.raises(ProtocolError, match="4 neighbours for threshold 2"):
        SecAggPlus(2).stage_respond("share", request, h.ctx["i0"], "i0")


# signed keys ------------------------------------------------------------------------------

def forged(kind: str, h: Harness, server: Advert) -> dict:
    """What a server relays as the victim's keys."""
    real = h.server.adverts[VICTIM]
    if kind == "own keys":
        return dataclasses.replace(real, c_pk=server.c_pk, s_pk=server.s_pk).wire()
    if kind == "certificate of its own CA":
        creds = Credentials.from_keys(SimulatedCA().keys(VICTIM))
        assert creds is not None and creds.signer is not None
        ad = Advert(server.c_pk, server.s_pk, creds.signer.certificate)
        return dataclasses.replace(ad, sig=creds.signer.sign(ad.signed(1, VICTIM))).wire()
    if kind == "another institution's keys":
        return h.server.adverts["i3"].wire()
    assert kind == "the victim's keys of an earlier round"
    return h.layer.stage_respond("advertise", {"round": 0}, {}, VICTIM)


FORGERIES = {"own keys": "are not signed by its certificate's key",
             "certificate of its own CA": "is not one the consortium CA issued",
             "another institution's keys": "is issued to 'i3'",
             "the victim's keys of an earlier round": "are not signed by its certificate's key"}


def share_requests(h: Harness, kind: str, server: Advert) -> dict[str, dict]:
    h.stage("advertise", h.names)
    requests = h.layer.stage_requests("share", h.acc, h.names)
    fake = forged(kind, h, server)
    return {u: {**r, "peers": {**r["peers"], VICTIM: fake}} if VICTIM in r["peers"] else r
            for u, r in requests.items()}


@pytest.fixture
def agreements(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every public key an X25519 agreement is computed with (to seal shares or masks)."""
    used: list[bytes] = []
    agree = crypto.agree

    def spy(sk: Any, peer: bytes, purpose: bytes) -> bytes:
        if purpose in (MASK, SHARE):
            used.append(peer)
        return agree(sk, peer, purpose)

    monkeypatch.setattr(crypto, "agree", spy)
    return used


@pytest.mark.parametrize("kind", FORGERIES)
def test_keys_the_victim_did_not_sign_are_refused_by_its_neighbours(kind, agreements):
    server_c, c_pk = crypto.keypair()
    server = Advert(c_pk, crypto.keypair()[1], "")
    h = Harness()
    requests = share_requests(h, kind, server)
    for u in (n for n in NAMES if n != VICTIM):
        with pytest.raises(ProtocolError, match=f"refusing round 1: .*{FORGERIES[kind]}.*"
                                                f"relayed keys '{VICTIM}' did not sign"):
            h.respond("share", requests[u], u)
    assert not agreements  # nothing sealed, no mask agreed, with any key


def test_without_the_signature_check_the_server_reads_shares_meant_for_the_victim(
        monkeypatch):
    """The attack the signatures stop: with neighbours trusting whatever keys the server
    relays (the code before), the share each sealed for the victim opens with the server's
    key."""
    monkeypatch.setattr(identity.Trust, "verify", lambda *args: None)
    server_c, c_pk = crypto.keypair()
    h = Harness()
    requests = share_requests(h, "own keys", Advert(c_pk, crypto.keypair()[1], ""))
    for u in (n for n in NAMES if n != VICTIM):
        sealed = h.respond("share", requests[u], u)["shares"][VICTIM]
        key = crypto.agree(server_c, h.server.adverts[u].c_pk, SHARE)
        share = crypto.open_sealed(key, unb64(sealed), _aad(1, u, VICTIM))
        assert set(json.loads(share)) == {"x", "b", "s"}


class KeySwapping(InProcessTransport):
    """A server that relays its own X25519 keys as the victim's in the share stage."""

    victim = "hungary"
    made: list[KeySwapping] = []

    def __init__(self, clients: Mapping[str, Handler]) -> None:
        super().__init__(clients)
        self.public = [crypto.keypair()[1], crypto.keypair()[1]]
        KeySwapping.made.append(self)

    def dispatch(self, tasks: Sequence[Task]) -> None:  # real time
        super().dispatch([self._swap(t) for t in tasks])

    def call(self, task: Task) -> Reply:  # simulated time
        return super().call(self._swap(task))

    def _swap(self, task: Task) -> Task:
        if task.kind is not TaskKind.STAGE:
            return task
        payload = task.stage.payload
        if self.victim not in payload.get("peers", {}):
            return task
        peers = dict(payload["peers"])
        peers[self.victim] = {**peers[self.victim], "c_pk": b64(self.public[0]),
                              "s_pk": b64(self.public[1])}
        return dataclasses.replace(task, body=dataclasses.replace(
            task.stage, payload={**payload, "peers": peers}))


def test_a_server_substituting_an_institutions_keys_is_detected_and_the_round_aborts(
        agreements):
    """A whole round over the four hospitals: every neighbour of the victim refuses, with the
    reason recorded; too few remain, so the round aborts and the model is unchanged."""
    history = simulated_session(transport=KeySwapping)
    event = history.events[0]
    assert event.version == 0 and "secagg+" in event.metrics["aborted"]
    neighbours = sorted(set(tables()) - {KeySwapping.victim})
    assert sorted(event.rejected) == neighbours
    assert all("not signed by its certificate's key" in event.rejected[n]
               and "relayed keys 'hungary' did not sign" in event.rejected[n]
               for n in neighbours)
    assert agreements  # the victim sealed its shares with its neighbours' real keys ...
    assert not set(KeySwapping.made[-1].public) & set(agreements)  # ... no one with the server's


# provisioned kits: the same checks with the project CA and ECDSA keys ---------------------

def test_provisioned_kits_sign_the_keys_and_a_kit_of_another_project_is_refused(tmp_path):
    provision(Project("heart", "localhost", tuple(sorted(tables()))), tmp_path / "kits")
    provision(Project("other", "localhost", (ROGUE,)), tmp_path / "other")
    keys = {n: kit_keys(tmp_path / "kits" / n) for n in tables()}
    keys[ROGUE] = kit_keys(tmp_path / "other" / ROGUE)
    history = session(True, keys, kit_keys(tmp_path / "kits" / "server"))
    event = history.events[0]
    assert event.version == 1 and ROGUE not in event.participants
    assert "is not one the consortium CA issued" in event.rejected[ROGUE]
    assert_same(history, plain(ROGUE, from_the_start=True))  # refused at secure preprocessing


def test_an_institution_signs_only_under_its_own_certificate_name(tmp_path):
    ca = SimulatedCA()
    layer = SecAggPlus(2, keys=ca.keys("hungary"))
    with pytest.raises(ConfigError, match="is 'cleveland' but its certificate names 'hungary'"):
        layer.stage_respond("advertise", {"round": 1}, {}, "cleveland")
    with pytest.raises(ConfigError, match="without the ca.pem"):
        SecAggPlus(2, keys={k: v for k, v in ca.keys("hungary").items() if k != "ca.pem"})
