"""CKKS: the decrypted homomorphic sum equals the plain sum up to the stated flooding noise; no
key material is needed beyond the institutions' identities; only the round's key holder can
decrypt; a broken ciphertext is refused whole; a missing institution is simply not added."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from fedsilo.aggregation.base import Accumulator
from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.secure.ckks import CKKSSum, flooding_stddev
from fedsilo.core.params import Params, spec_of
from fedsilo.errors import MalformedUpdate, ProtocolError
from tests.aggregation.secure.test_secaggplus import NAMES, run

CKKS = {"layer": "mean", "weighted": True, "secure": {"protocol": "ckks"}}


@dataclass
class Round:
    """One CKKS round played by hand: a server layer, one layer and private round context per
    institution, the key made by the holder (the first name) in the keygen stage."""

    names: list[str]
    spec: Any
    round: int = 1
    server: CKKSSum = field(default_factory=CKKSSum)
    acc: Accumulator = field(init=False)
    layers: dict[str, CKKSSum] = field(init=False)
    ctx: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = {n: CKKSSum() for n in self.names}
        self.ctx = {n: {"me": n, "round": self.round} for n in self.names}
        self.acc = self.server.zero(self.spec)
        self.server.begin(self.acc, self.round, 0, self.names)
        (holder, request), = self.server.stage_requests("keygen", self.acc, self.names).items()
        answer = self.layers[holder].stage_respond("keygen", request, self.ctx[holder], holder)
        checked = self.server.stage_check("keygen", self.acc, holder, answer)
        assert self.server.stage_collect("keygen", self.acc, {holder: checked}) == self.names

    @property
    def holder(self) -> str:
        return sorted(self.names)[0]

    def encode(self, name: str, update: Params) -> Params:
        config = self.server.fit_config(self.acc, name)
        return self.layers[name].encode(update, 1, config, self.ctx[name])

    def decrypt(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The holder's answer to a decrypt request with `payload`."""
        return self.layers[self.holder].stage_respond("decrypt", payload,
                                                      self.ctx[self.holder], self.holder)

    def request(self) -> dict[str, Any]:
        """The server's decrypt request over the packages it accumulated."""
        return self.server.stage_requests("decrypt", self.acc, self.names)[self.holder]


def plain(answer: dict[str, Any], name: str) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(answer["plain"][name]), np.float64)


def test_decrypted_sum_equals_plain_sum_up_to_flooding():
    rng = np.random.default_rng(0)
    ups = [{"w": rng.normal(size=(50, 300))} for _ in range(5)]
    names = [f"inst{i}" for i in range(5)]
    r = Round(names, spec_of(ups[0]))
    for n, u in zip(names, ups):
        r.server.accumulate(r.acc, r.encode(n, u))
    request = r.request()
    answer = r.decrypt(request)
    r.server.stage_collect("decrypt", r.acc, {r.holder: r.server.stage_check(
        "decrypt", r.acc, r.holder, answer)})
    got = r.server.finalize(None, r.acc)[1]["w"]
    want = sum(u["w"] for u in ups)
    sigma = flooding_stddev(float(np.max(np.abs(want))))
    assert 0 < np.max(np.abs(got - want)) < 7 * sigma


def test_weighted_mean_over_ckks_needs_no_key_material():
    server, layer = build_aggregator(CKKS), build_aggregator(CKKS)
    assert isinstance(server.inner, CKKSSum) and server.inner.min_contributors == 2
    rng = np.random.default_rng(1)
    ups = [{"w": rng.normal(size=(20,)).astype(np.float32)} for _ in range(3)]
    weights = [3, 1, 4]
    acc = server.zero(spec_of(ups[0]))
    inner = server.inner
    names = ["a", "b", "c"]
    inner.begin(acc, 1, 0, names)
    ctx = {n: {"me": n, "round": 1} for n in names}
    (holder, req), = inner.stage_requests("keygen", acc, names).items()
    key = inner.stage_check("keygen", acc, holder,
                            layer.inner.stage_respond("keygen", req, ctx[holder], holder))
    inner.stage_collect("keygen", acc, {holder: key})
    for n, u, w in zip(names, ups, weights):
        server.accumulate(acc, layer.encode(u, w, inner.fit_config(acc, n), ctx[n]))
    request = inner.stage_requests("decrypt", acc, names)[holder]
    answer = layer.inner.stage_respond("decrypt", request, ctx[holder], holder)
    inner.stage_collect("decrypt", acc, {holder: answer})
    got = server.finalize(None, acc)[1]["w"]
    want = sum(w * u["w"].astype(np.float64) for u, w in zip(ups, weights)) / sum(weights)
    np.testing.assert_allclose(got, want, atol=5e-2)  # σ ≈ 2^-8 of the largest sum


def test_only_the_key_holder_can_decrypt():
    r = Round(["a", "b", "c"], spec_of({"w": np.zeros(4)}))
    for n in r.names:
        r.server.accumulate(r.acc, r.encode(n, {"w": np.ones(4)}))
    request = r.request()
    with pytest.raises(ProtocolError, match="made no key this round"):
        r.layers["b"].stage_respond("decrypt", request, r.ctx["b"], "b")
    with pytest.raises(ProtocolError, match="made no key this round"):  # a later round
        r.layers["a"].stage_respond("decrypt", request, {"me": "a", "round": 2}, "a")


def test_broken_ciphertext_is_refused_whole():
    r = Round(["a", "b"], spec_of({"a": np.zeros(10), "b": np.zeros(5000)}))
    good = r.encode("a", {"a": np.ones(10), "b": np.ones(5000)})
    broken = dict(good, b=good["b"][:-100])
    with pytest.raises(MalformedUpdate, match="ckks"):
        r.server.accumulate(r.acc, broken)
    assert r.acc.count == 0 and r.acc.extra["ckks"]["packages"] == {}  # nothing half-kept
    r.server.accumulate(r.acc, good)
    assert r.acc.count == 1


def test_ckks_round_matches_plain_and_excludes_a_dropout():
    """The full engine (keygen, fit, decrypt stages): the model matches the plain run up to
    the flooding noise, and an institution that drops at the fit is simply not added."""
    plain_run = run(NAMES, {"layer": "mean", "weighted": True})
    dropped = [n for n in NAMES if n != "inst4"]
    expected = run(dropped, {"layer": "mean", "weighted": True})
    full = run(NAMES, CKKS)
    partial = run(NAMES, CKKS, drop={"inst4": "fit"})
    for got, want in ((full, plain_run), (partial, expected)):
        assert got.events[-1].version == 1
        for name, value in want.params.items():
            np.testing.assert_allclose(got.params[name], value, atol=2e-2, rtol=0)
    assert partial.events[-1].metrics["aggregator"]["contributions"] == len(dropped)
