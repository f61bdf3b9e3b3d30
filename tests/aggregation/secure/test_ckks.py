"""CKKS: the decrypted homomorphic sum equals the plain sum to CKKS precision; the server's
context cannot decrypt; a broken ciphertext is refused whole; a missing institution is simply
not added."""

import numpy as np
import pytest

from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.secure.ckks import CKKSSum, new_keys
from fedsilo.core.params import spec_of
from fedsilo.errors import ConfigError, MalformedUpdate
from tests.aggregation.secure.test_secaggplus import NAMES, assert_same, run

SECRET, PUBLIC = new_keys()
CKKS = {"layer": "mean", "weighted": True, "secure": {"protocol": "ckks"}}


def test_decrypted_sum_equals_plain_sum():
    layer = build_aggregator(CKKS, {"ckks": SECRET})
    server = build_aggregator(CKKS, {"ckks": PUBLIC})
    rng = np.random.default_rng(0)
    ups = [{"w": rng.normal(size=(50, 300)).astype(np.float32)} for _ in range(5)]
    acc = server.zero(spec_of(ups[0]))
    for u, n in zip(ups, [3, 1, 4, 1, 5]):
        server.accumulate(acc, layer.encode(u, n, {}, {}))
    inner = server.inner
    inner.begin(acc, 1, 0, ["a"])
    request = inner.stage_requests("decrypt", acc, ["a"])["a"]
    answer = layer.inner.stage_respond("decrypt", request, {}, "a")
    inner.stage_collect("decrypt", acc, {"a": answer})
    got = server.finalize(None, acc)[1]["w"]
    want = sum(n * u["w"].astype(np.float64) for u, n in zip(ups, [3, 1, 4, 1, 5])) / 14
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_server_context_cannot_decrypt():
    server = CKKSSum(PUBLIC)
    with pytest.raises(ConfigError, match="holds no secret key"):
        server.stage_respond("decrypt", {"sum": {}}, {}, "server")


def test_broken_ciphertext_is_refused_whole():
    client, server = CKKSSum(SECRET), CKKSSum(PUBLIC)
    spec = spec_of({"a": np.zeros(10), "b": np.zeros(5000)})
    acc = server.zero(spec)
    good = client.encode({"a": np.ones(10), "b": np.ones(5000)}, 1, {}, {})
    broken = dict(good, b=good["b"][:-100])
    with pytest.raises(MalformedUpdate, match="ckks"):
        server.accumulate(acc, broken)
    assert acc.count == 0 and acc.extra["ckks"]["sum"] == {}  # nothing half-applied
    server.accumulate(acc, good)
    assert acc.count == 1


def test_ckks_round_matches_plain_and_excludes_a_dropout():
    plain = run(NAMES, {"layer": "mean", "weighted": True})
    dropped = [n for n in NAMES if n != "inst4"]
    expected = run(dropped, {"layer": "mean", "weighted": True})
    full = _ckks_run(NAMES)
    assert_same(full, plain)
    partial = _ckks_run(NAMES, drop={"inst4": "fit"})
    assert_same(partial, expected)


def _ckks_run(names, drop=None):
    """The shared harness, with institutions holding the secret context and the server the
    public one."""
    import tests.aggregation.secure.test_secaggplus as harness

    real = harness.build_aggregator
    calls = []

    def build(spec, keys=None):
        calls.append(spec)
        # the harness builds the server's stack first, then one per institution
        return real(spec, {"ckks": PUBLIC if len(calls) == 1 else SECRET})

    harness.build_aggregator = build
    try:
        return run(names, CKKS, drop=drop)
    finally:
        harness.build_aggregator = real


def test_missing_key_is_a_config_error():
    with pytest.raises(ConfigError, match="needs the consortium's CKKS key"):
        build_aggregator(CKKS)
