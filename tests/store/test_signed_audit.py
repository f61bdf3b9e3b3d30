"""The audit trail is signed by the server: an editor of the database who recomputes the chain
(without the server's key), truncates the run, edits a metric, the privacy spent or the config,
or forges a signature is caught; a checkpoint that is not the signed model is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sqlalchemy import select, text, update

from fedsilo.cli.main import main
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from fedsilo.store import audit as chain
from fedsilo.store import run_store as rs
from fedsilo.store import signing
from fedsilo.store.run_store import RunStore
from fedsilo.store.schema import audit, audit_keys, audit_seal, audit_signatures, rounds, runs
from tests.store.helpers import event, heart, signed_by_kits

ROUNDS = 3


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """One recorded simulation of 3 rounds (each test tampers with a copy)."""
    out = tmp_path_factory.mktemp("signed")
    folder = run_simulation(heart(out, rounds=ROUNDS)).output_dir
    return out, folder.name


@pytest.fixture
def run(original, tmp_path):
    out, run_id = original
    shutil.copytree(out, tmp_path / "results")
    return tmp_path / "results", run_id


def sql(out, *statements):
    with RunStore(out).engine.begin() as db:
        for statement in statements:
            db.execute(text(statement))


def verdict(out, run_id, **kw):
    return RunStore(out, create=False).verify(run_id, **kw)


def rechain(out, run_id, signer=None):
    """What an editor of the database can do: rebuild every entry from the (edited) tables,
    recompute the hash chain and the seal — and, holding some key (never the server's),
    re-sign them and put that key's certificate in place of the server's."""
    store = RunStore(out)
    data = store.run(run_id)
    with store.engine.begin() as db:
        raw = [dict(r._mapping) for r in db.execute(
            select(rounds).where(rounds.c.run_id == run_id).order_by(rounds.c.round))]
        config = db.execute(select(runs.c.config).where(runs.c.run_id == run_id)).scalar()
        prev = chain.GENESIS
        for rnd, facts in sorted(rs._facts(data, raw, config).items()):
            entry = chain.canonical(facts)
            digest = chain.chain_hash(prev, entry)
            db.execute(update(audit).where(audit.c.run_id == run_id, audit.c.round == rnd)
                       .values(entry=entry, prev_hash=prev, hash=digest))
            if signer is not None:
                db.execute(update(audit_signatures).where(
                    audit_signatures.c.run_id == run_id, audit_signatures.c.round == rnd)
                    .values(signature=signer.sign(run_id, digest)))
            prev = digest
        seal = db.execute(select(audit_seal).where(audit_seal.c.run_id == run_id)).first()
        entry = json.loads(seal.entry)
        entry["rounds"], entry["last"] = len(raw), raw[-1]["round"]
        entry["model"] = raw[-1]["model_digest"]
        body = chain.canonical(entry)
        digest = chain.chain_hash(prev, body)
        values = {"entry": body, "prev_hash": prev, "hash": digest}
        if signer is not None:
            values["signature"] = signer.sign(run_id, digest)
            db.execute(update(audit_keys).where(audit_keys.c.run_id == run_id)
                       .values(certificate=signer.certificate))
        db.execute(update(audit_seal).where(audit_seal.c.run_id == run_id).values(**values))


def test_a_recorded_run_is_signed_and_sealed(run, capsys):
    out, run_id = run
    v = verdict(out, run_id, folder=out / run_id)
    assert v.ok and v.rounds == ROUNDS and "sealed: finished" in v.detail
    assert f"{4 * ROUNDS} of {4 * ROUNDS} updates signed by the institutions" in v.detail
    stored = RunStore(out).engine.connect().execute(select(audit_keys.c.certificate)).scalar()
    assert (out / run_id / signing.RUN_CERT).read_text() == stored  # the key's anchor
    seal = json.loads((out / run_id / signing.SEAL_COPY).read_text())
    assert seal == RunStore(out).seal(run_id) and json.loads(seal["entry"])["rounds"] == ROUNDS
    assert main(["audit", "verify", run_id, "--store", str(out)]) == 0
    assert "signed by the key stored with the run (simulation)" in capsys.readouterr().out


def test_a_recomputed_chain_without_the_servers_key_is_caught(run, capsys):
    out, run_id = run
    sql(out, f"UPDATE rounds SET federated = replace(federated, '0.', '0.9') "
             f"WHERE round = 2 AND run_id = '{run_id}'")
    rechain(out, run_id)  # links and facts agree again: only the signatures cannot follow
    v = verdict(out, run_id)
    assert not v.ok and v.round == 2 and "signature is not valid" in v.problem
    assert main(["audit", "verify", run_id, "--store", str(out)]) == 1
    assert "first bad round: 2" in capsys.readouterr().out


def test_a_chain_re_signed_with_another_key_is_caught_by_its_anchor(run, tmp_path):
    out, run_id = run
    sql(out, f"UPDATE rounds SET epsilon = 0.5 WHERE round = 1 AND run_id = '{run_id}'")
    rechain(out, run_id, signing.new_signer(run_id, "simulation"))
    v = verdict(out, run_id, folder=out / run_id)  # the results folder's audit.pem
    assert not v.ok and "signing key was replaced" in v.problem
    # without an anchor, the editor's own key verifies: what a simulation's signature proves
    assert verdict(out, run_id).ok


def test_truncation_is_caught(run, capsys):
    out, run_id = run
    last = ROUNDS
    sql(out, *[f"DELETE FROM {t} WHERE round = {last}" for t in (
        "rounds", "participation", "institution_metrics", "audit", "audit_signatures")])
    v = verdict(out, run_id)
    assert not v.ok and "truncation" in v.problem and v.round == last
    assert main(["audit", "verify", run_id, "--store", str(out)]) == 1
    assert f"first bad round: {last}" in capsys.readouterr().out
    sql(out, "DELETE FROM audit_seal")  # the seal removed too: the run still says finished
    v = verdict(out, run_id)
    assert not v.ok and "no signed final entry" in v.problem and v.round == last
    sql(out, "UPDATE runs SET status = 'running'")  # ... and the run made to look unfinished:
    assert verdict(out, run_id).ok  # the store alone cannot tell ("NOT sealed") ...
    v = verdict(out, run_id, folder=out / run_id)  # ... the results folder's copy of the seal
    assert not v.ok and "end of the run was removed" in v.problem
    assert main(["audit", "verify", run_id, "--store", str(out)]) == 1


@pytest.mark.parametrize("statement,what,rnd", [
    ("UPDATE institution_metrics SET value = value / 2 WHERE round = 2", "metrics", 2),
    ("UPDATE rounds SET federated = replace(federated, '0.', '0.1') WHERE round = 3",
     "metrics", 3),
    ("UPDATE rounds SET epsilon = 0.25 WHERE round = 2", "privacy spent (epsilon)", 2),
    ("UPDATE runs SET config = replace(config, 'heart', 'hearx')", "config", 1),
])
def test_an_edited_metric_epsilon_or_config_is_caught(run, statement, what, rnd):
    out, run_id = run
    sql(out, statement)
    v = verdict(out, run_id)
    assert not v.ok and v.round == rnd and what in v.problem
    assert main(["audit", "verify", run_id, "--store", str(out)]) == 1


@pytest.mark.parametrize("statement,where", [
    ("UPDATE audit_signatures SET signature = '00' || substr(signature, 3) WHERE round = 2",
     "round 2"),
    ("UPDATE audit_signatures SET signature = (SELECT signature FROM audit_signatures "
     "WHERE round = 1) WHERE round = 3", "round 3"),
    ("DELETE FROM audit_signatures WHERE round = 1", "round 1"),
    ("UPDATE audit_seal SET signature = (SELECT signature FROM audit_signatures "
     "WHERE round = 3)", "final entry"),
    ("UPDATE audit_seal SET entry = replace(entry, 'finished', 'failed')", "final entry"),
    ("DELETE FROM audit_keys", "unsigned"),
])
def test_a_forged_or_missing_signature_is_caught(run, statement, where):
    out, run_id = run
    sql(out, statement)
    v = verdict(out, run_id)
    assert not v.ok and where in v.problem


def test_a_replaced_final_model_is_caught(run):
    out, run_id = run
    model = out / run_id / "model.npz"
    arrays = dict(np.load(model))
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + 1
    np.savez(model, **arrays)
    v = verdict(out, run_id, folder=out / run_id)
    assert not v.ok and "model.npz is not the final model" in v.problem


def test_the_server_kit_key_signs_and_the_project_ca_certifies_it(tmp_path, capsys):
    from fedsilo.transport.grpc.provision import Project, provision

    kits = provision(Project("p", "localhost", ("a", "b")), tmp_path / "kits")
    other = provision(Project("q", "localhost", ("a",)), tmp_path / "other")
    store = RunStore(tmp_path / "db")
    signer = signing.kit_signer(kits / "server")
    assert signer is not None and signer.origin == "kit"
    store.use_signer("r", signer)
    store.start_run("r", "r", {"run": {"rounds": 2}}, "sync", "fedavg", "accuracy")
    for rnd in (1, 2):  # each institution signs its update with its own kit key
        store.record("r", signed_by_kits(
            event(rnd, {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.6}}), "r", kits))
    store.finish("r")
    ca = (kits / "server" / "ca.pem").read_bytes()
    v = store.verify("r", ca=ca)
    assert v.ok and "issued by the project CA" in v.detail
    assert "4 of 4 updates signed by the institutions that sent them" in v.detail
    assert main(["audit", "verify", "r", "--store", str(tmp_path / "db"),
                 "--kit", str(kits / "a")]) == 0
    assert not store.verify("r", ca=(other / "server" / "ca.pem").read_bytes()).ok
    rechain(tmp_path / "db", "r", signing.new_signer("r", "kit"))  # an editor's own key
    v = store.verify("r", ca=ca)
    assert not v.ok and "not issued by the project CA" in v.problem
    assert main(["audit", "verify", "r", "--store", str(tmp_path / "db"),
                 "--kit", str(kits / "a")]) == 1
    capsys.readouterr()


def _unfinished(out):
    sql(out, "UPDATE runs SET status = 'running'")


def test_resume_refuses_a_checkpoint_that_is_not_the_signed_model(run):
    from fedsilo.store.checkpoint import load_checkpoint, save_checkpoint
    from fedsilo.store.recorder import unfinished_run

    out, run_id = run
    _unfinished(out)
    cfg = heart(out, rounds=ROUNDS + 1)
    assert unfinished_run(cfg).resume_point().round == ROUNDS  # the genuine one is accepted
    saved = load_checkpoint(out / run_id)
    assert saved is not None
    params = {k: v + 0.01 for k, v in saved.state.params.items()}
    save_checkpoint(out / run_id, saved.round,
                    type(saved.state)(**{**vars(saved.state), "params": params}))
    with pytest.raises(ConfigError, match="not the model the audit trail signed for round 3"):
        unfinished_run(cfg)
    data = RunStore(out).run(run_id)
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3]  # nothing was dropped


def test_resume_refuses_a_checkpoint_whose_round_has_no_signed_entry(run):
    from fedsilo.store.recorder import unfinished_run

    out, run_id = run
    _unfinished(out)
    sql(out, f"UPDATE audit_signatures SET signature = '00' WHERE round = {ROUNDS}")
    with pytest.raises(ConfigError, match="holds no signed entry for round 3"):
        unfinished_run(heart(out, rounds=ROUNDS + 1))


def test_server_resume_with_a_tampered_checkpoint_is_exit_2(tmp_path, capsys, monkeypatch):
    """`fedsilo server --resume` (stops before waiting for anyone): a checkpoint edited after
    the run is refused with exit code 2 and the reason; so is another key than the run's."""
    from fedsilo.config.schema import load_config
    from fedsilo.store.checkpoint import load_checkpoint, save_checkpoint
    from fedsilo.transport.grpc.provision import Project, provision
    from tests.integration.helpers import FILES, heart_config
    from tests.store.helpers import cli

    kits = provision(Project("heart", "localhost", tuple(FILES)), tmp_path / "kits")
    config = heart_config(tmp_path, rounds=2, compare=False, checkpoint_every=1)
    cfg = load_config(config)
    out = tmp_path / "results"
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(out)})})
    folder = run_simulation(cfg).output_dir
    _unfinished(out)
    args = ["server", "--kit", str(kits / "server"), "--config", str(config), "--address",
            "127.0.0.1:0", "--output", str(out), "--resume", "--wait", "0"]
    code, text_out = cli(capsys, monkeypatch, *args)  # the simulation's key is not the kit's
    assert code == 2 and "signed by another key" in text_out, text_out
    saved = load_checkpoint(folder)
    assert saved is not None
    params = {k: v * 2 for k, v in saved.state.params.items()}
    save_checkpoint(folder, saved.round, type(saved.state)(**{**vars(saved.state),
                                                              "params": params}))
    code, text_out = cli(capsys, monkeypatch, *args)
    assert code == 2 and "is not the model the audit trail signed for round 2" in text_out
    assert "Traceback" not in text_out
    assert RunStore(out).verify(folder.name).ok  # nothing recorded was touched


def test_a_simulated_attacker_signs_what_it_sends(tmp_path):
    """A poisoning institution of a simulation is a member holding a valid key: it signs
    its poisoned update, so the trail verifies and records the update it really sent."""
    cfg = heart(tmp_path, rounds=2)
    cfg = cfg.model_copy(update={"attack": cfg.attack.model_copy(update={
        "fraction": 0.25, "kind": "sign_flip"})})
    folder = run_simulation(cfg).output_dir
    v = verdict(tmp_path, folder.name, folder=folder)
    assert v.ok and "8 of 8 updates signed by the institutions" in v.detail, v
