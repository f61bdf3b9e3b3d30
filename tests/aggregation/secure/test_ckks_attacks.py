"""Attacks on the CKKS secure sum, each mounted and shown to fail:

1. passive key recovery (Li & Micciancio, EUROCRYPT 2021) from exact decryptions under a fixed
   key: the key is made each round by the key-holding institution, and every decryption is
   flooded with fresh Gaussian noise of the stated σ;
2. the server has one institution's ciphertext decrypted: the holder decrypts only signed
   packages of distinct institutions, at least two, of its round and key, once per round;
3. a kit keeper decrypts everything: no kit and no simulation holds a CKKS secret.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from fedsilo.aggregation.secure import identity
from fedsilo.aggregation.secure.ckks import (
    CKKSSum,
    _pack,
    _unpack,
    flood,
    flooding_stddev,
    package_message,
)
from fedsilo.config.schema import load_config
from fedsilo.core.params import spec_of
from fedsilo.errors import ConfigError, MalformedUpdate, ProtocolError
from fedsilo.simulation.run import _keys, run_simulation
from fedsilo.transport.grpc.provision import Project, provision
from tests.aggregation.secure.test_ckks import Round, plain

NAMES = ["a", "b", "c"]
SPEC = spec_of({"w": np.zeros(64)})


def played(names=NAMES, round=1):
    """A round with every institution's package accumulated by the server."""
    r = Round(list(names), SPEC, round)
    for k, n in enumerate(r.names):
        r.server.accumulate(r.acc, r.encode(n, {"w": np.full(64, float(k + 1))}))
    return r


def tampered(package: dict[str, str], **header) -> dict[str, str]:
    """`package` with fields of its header replaced."""
    out = {}
    for name, text in package.items():
        blobs = _unpack(np.frombuffer(base64.b64decode(text), np.uint8))
        fields = {**json.loads(blobs[0]), **header}
        out[name] = base64.b64encode(
            _pack([json.dumps(fields).encode(), *blobs[1:]]).tobytes()).decode()
    return out


def test_decryption_is_flooded_with_the_stated_sigma_and_fresh_noise():
    r = played()
    request = r.request()
    first = plain(r.decrypt(request), "w")
    exact = np.full(64, 6.0)
    sigma = flooding_stddev(6.0)  # R = 8: σ = 2^40·(2^-48·8 + 2^-58)
    assert sigma == pytest.approx(2.0**-5, rel=1e-3)
    assert 0.5 * sigma < np.std(first - exact) < 2 * sigma
    r.ctx[r.holder]["ckks"]["decrypted"] = False  # the same sum decrypted again (test only)
    second = plain(r.decrypt(request), "w")
    assert not np.array_equal(first, second)  # fresh flooding, not the same noise
    big = flood(np.full(40_000, 1000.0)) - 1000.0  # many blocks: the empirical σ
    assert np.std(big) == pytest.approx(flooding_stddev(1000.0), rel=0.05)


def test_key_is_fresh_each_round_and_never_the_admins(tmp_path):
    keys = []
    for rnd in (1, 2):
        r = Round(NAMES, SPEC, rnd)
        key = r.acc.extra["ckks"]["key"]
        assert key["holder"] == "a"
        public = r.server._public_context(base64.b64decode(key["public"]))
        assert not public.has_secret_key()
        assert r.ctx["a"]["ckks"]["secret"].has_secret_key()  # stays in a's round context
        keys.append(key["public"])
    assert keys[0] != keys[1]
    provision(Project("p", "localhost", ("x", "y")), tmp_path / "kits")
    files = [p.name for p in (tmp_path / "kits").rglob("*")]
    assert not any("ckks" in f for f in files)
    project = tmp_path / "project.toml"
    project.write_text('[project]\nname = "p"\ninstitutions = ["x", "y"]\nckks = true\n')
    with pytest.raises(ConfigError, match="made per round by the institutions"):
        Project.load(project)
    cfg = load_config("src/fedsilo/examples/heart_disease/heart_disease.toml")
    cfg = cfg.model_copy(update={"aggregation": cfg.aggregation.model_copy(
        update={"secure": "ckks"})})
    institutions, server = _keys(cfg, ["x", "y"], signed=False)
    assert set(server) == {identity.CA}
    assert all(set(k) == {identity.KEY, identity.CERT, identity.CA}
               for k in institutions.values())


def test_server_cannot_substitute_its_own_key():
    r = Round(NAMES, SPEC)
    mine = CKKSSum()
    ctx = {"me": "z", "round": 1}
    forged = mine.stage_respond("keygen", {"round": 1}, ctx, "z")  # not the cohort's holder
    config = {"ckks": {**r.server.fit_config(r.acc, "b")["ckks"], "public": forged["public"]}}
    with pytest.raises(ProtocolError, match="not signed"):
        r.layers["b"].encode({"w": np.ones(64)}, 1, config, r.ctx["b"])


def test_holder_refuses_one_institutions_package_alone():
    r = played()
    request = r.request()
    alone = {**request, "packages": [request["packages"][1]]}
    with pytest.raises(ProtocolError, match="1 institutions .* fewer than 2"):
        r.decrypt(alone)
    # its own package does not count twice either
    with pytest.raises(ProtocolError, match="two packages of 'a'"):
        r.decrypt({**request, "packages": [request["packages"][0]] * 2})


def test_holder_refuses_a_forged_signature():
    r = played()
    request = r.request()
    forged = tampered(request["packages"][1],
                      signature=base64.b64encode(bytes(64)).decode())
    with pytest.raises(ProtocolError, match="not signed by its certificate's key"):
        r.decrypt({**request, "packages": [request["packages"][0], forged]})


def test_holder_refuses_a_package_resigned_by_another_institution_under_the_wrong_name():
    """'c' re-signs 'b''s ciphertexts with its own key, keeping the name 'b' (so that b's
    update is counted as a second contributor next to c's own)."""
    r = played()
    request = r.request()
    b_package = request["packages"][1]
    fields = json.loads(_unpack(np.frombuffer(base64.b64decode(b_package["w"]), np.uint8))[0])
    c_signer = identity.simulated("c").signer_for("c")
    from fedsilo.aggregation.secure.ckks import ciphertext_digest

    blobs = {n: _unpack(np.frombuffer(base64.b64decode(t), np.uint8))[1:]
             for n, t in b_package.items()}
    sig = c_signer.sign(package_message(1, "b", fields["context"], ciphertext_digest(blobs)))
    resigned = tampered(b_package, signature=base64.b64encode(sig).decode(),
                        certificate=c_signer.certificate)
    with pytest.raises(ProtocolError, match="issued to 'c'"):
        r.decrypt({**request, "packages": [request["packages"][0], resigned]})


def test_holder_refuses_a_duplicated_package():
    r = played()
    request = r.request()
    b = request["packages"][1]
    with pytest.raises(ProtocolError, match="two packages of 'b'"):
        r.decrypt({**request, "packages": [b, b]})
    with pytest.raises(MalformedUpdate, match="second package of 'b'"):  # the server, too
        r.server.accumulate(r.acc, {n: np.frombuffer(base64.b64decode(t), np.uint8)
                                    for n, t in b.items()})


def test_holder_refuses_a_package_of_another_round():
    old = played(round=1)
    new = played(round=2)
    request = new.request()
    stale = old.request()["packages"][1]  # b's package of round 1, genuinely signed
    with pytest.raises(ProtocolError, match="of another round"):
        new.decrypt({**request, "packages": [request["packages"][0], stale]})
    relabelled = tampered(stale, round=2)  # claimed to be of round 2: signature fails
    with pytest.raises(ProtocolError, match="not under this round's key|not signed"):
        new.decrypt({**request, "packages": [request["packages"][0], relabelled]})
    with pytest.raises(ProtocolError, match="another round"):  # the request itself
        new.decrypt({**request, "round": 1})


def test_holder_decrypts_once_per_round():
    """A second request with a subset would give one package by difference."""
    r = played()
    request = r.request()
    r.decrypt(request)
    with pytest.raises(ProtocolError, match="already decrypted"):
        r.decrypt({**request, "packages": request["packages"][:2]})


def test_simulated_ckks_run_keeps_accuracy():
    cfg = load_config("src/fedsilo/examples/heart_disease/heart_disease.toml")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"compare": False})})
    none = run_simulation(cfg, write=False).final["accuracy"]
    ckks = run_simulation(cfg.model_copy(update={"aggregation": cfg.aggregation.model_copy(
        update={"secure": "ckks"})}), write=False)
    assert "aborted" not in ckks.history.events[-1].metrics
    assert abs(ckks.final["accuracy"] - none) <= 0.01
