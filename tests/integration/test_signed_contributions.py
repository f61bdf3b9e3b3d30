"""Signed contributions and receipts (issue 12 §5, items 3-4), over a real deployment: 1 server
and 4 institution processes over mutual TLS. Each institution signs its updates with its kit
key; the server refuses an unsigned one and returns a signed receipt for each accepted one.
The attacks: whoever holds the server key rewrites an update digest and re-signs the whole
chain; an editor cuts the end of a run together with its seal; a forged receipt."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from sqlalchemy import delete, update

from fedsilo.aggregation.secure.identity import Trust, kit_keys
from fedsilo.cli.main import main
from fedsilo.client.institution import Institution
from fedsilo.config.build import build_schema
from fedsilo.config.schema import load_config
from fedsilo.data.loading import read_table
from fedsilo.engine.events import RoundEvent
from fedsilo.session import run_session
from fedsilo.store import signing
from fedsilo.store.contributions import make_receipt
from fedsilo.store.run_store import RunStore
from fedsilo.store.schema import (
    audit,
    audit_seal,
    audit_signatures,
    contributions,
    institution_metrics,
    participation,
    rounds,
    runs,
)
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.tls import Gatekeeper, server_credentials
from tests.integration.conftest import start
from tests.integration.helpers import FILES, HEART, federation
from tests.store.test_signed_audit import rechain

pytestmark = pytest.mark.integration
NAMES = list(FILES)
ROUNDS = 3


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A finished 3-round deployment: its kits (each holding its receipts) and results."""
    tmp = tmp_path_factory.mktemp("signed")
    kits = provision(Project("heart", "localhost", tuple(NAMES),
                             policy={"secure": "none"}), tmp / "kits")
    with federation(kits, tmp, NAMES, rounds=ROUNDS) as (srv, clients, _):
        assert srv.finish(900) == 0, srv.text()
        assert all(c.finish(300) == 0 for c in clients.values())
    run_id = next((tmp / "results").glob("*/model.npz")).parent.name
    return kits, tmp / "results", run_id


@pytest.fixture
def copy(deployed, tmp_path):
    kits, results, run_id = deployed
    shutil.copytree(results, tmp_path / "results")
    return kits, tmp_path / "results", run_id


def verify(capsys, out, run_id, kits, *extra):
    code = main(["audit", "verify", run_id, "--store", str(out), "--kit",
                 str(kits / "server"), *extra])
    text = capsys.readouterr().out.replace("\n", " ")
    return code, text


def test_every_update_is_signed_by_its_institution_and_acknowledged(deployed, capsys):
    kits, out, run_id = deployed
    code, text = verify(capsys, out, run_id, kits)
    assert code == 0, text
    total = ROUNDS * len(NAMES)
    assert f"{total} of {total} updates signed by the institutions that sent them" in text
    for name in NAMES:
        receipts = [json.loads(line) for line in
                    (kits / name / "receipts.jsonl").read_text().splitlines()]
        mine = [r for r in receipts if r["run"] == run_id]
        assert len(mine) == ROUNDS and {r["institution"] for r in mine} == {name}
        code, text = verify(capsys, out, run_id, kits, "--receipts",
                            str(kits / name / "receipts.jsonl"))
        assert code == 0 and f"records all {ROUNDS} updates" in text, text


def test_the_server_key_cannot_rewrite_an_institutions_update(copy, capsys):
    """Whoever holds server.key edits a contribution's digest and re-signs the whole chain
    with that key: the institution's own signature no longer matches."""
    kits, out, run_id = copy
    with RunStore(out).engine.begin() as db:
        db.execute(update(participation).where(
            participation.c.run_id == run_id, participation.c.round == 2,
            participation.c.institution == "hungary").values(update_digest="ab" * 32))
    rechain(out, run_id, signing.kit_signer(kits / "server"))
    code, text = verify(capsys, out, run_id, kits)
    assert code == 1 and "first bad round: 2" in text
    assert "'hungary'" in text and "does not match the recorded update digest" in text


def test_removing_an_institutions_signature_is_caught(copy, capsys):
    kits, out, run_id = copy
    with RunStore(out).engine.begin() as db:
        db.execute(delete(contributions).where(contributions.c.run_id == run_id,
                                               contributions.c.round == 3))
    code, text = verify(capsys, out, run_id, kits)
    assert code == 1 and "first bad round: 3" in text and "carries no signature" in text


def test_receipts_catch_a_run_cut_short_with_its_seal(copy, capsys):
    """The hole the seal alone leaves: the last round deleted from every table, the seal
    deleted too and the run marked running, checked without the results folder."""
    kits, out, run_id = copy
    with RunStore(out).engine.begin() as db:
        for table in (rounds, participation, institution_metrics, audit, audit_signatures,
                      contributions):
            db.execute(delete(table).where(table.c.run_id == run_id, table.c.round == ROUNDS))
        db.execute(delete(audit_seal).where(audit_seal.c.run_id == run_id))
        db.execute(update(runs).where(runs.c.run_id == run_id).values(status="running"))
    (out / run_id / signing.SEAL_COPY).unlink()
    code, text = verify(capsys, out, run_id, kits)
    assert code == 0 and "NOT sealed" in text  # the trail alone cannot tell
    code, text = verify(capsys, out, run_id, kits, "--receipts",
                        str(kits / "cleveland" / "receipts.jsonl"))
    assert code == 1 and f"receipt of round {ROUNDS} (cleveland)" in text
    assert "does not record it as accepted" in text


def test_a_forged_receipt_is_not_taken_as_evidence(deployed, tmp_path, capsys):
    """A receipt signed by another project's server key proves nothing."""
    kits, out, run_id = deployed
    other = provision(Project("other", "localhost", ("x",)), tmp_path / "other")
    forged = make_receipt(signing.kit_signer(other / "server"), run_id, 1, "cleveland",
                          "cd" * 32)
    path = tmp_path / "receipts.jsonl"
    path.write_text(forged + "\n")
    code, text = verify(capsys, out, run_id, kits, "--receipts", str(path))
    assert code == 1 and "signed by another key than the one that signs the trail" in text


def test_the_server_refuses_an_unsigned_update(tmp_path):
    """An institution with a valid TLS identity that does not sign (no kit key given to
    it): each of its updates is refused with the reason; the others are accepted."""
    kits = provision(Project("heart", "localhost", tuple(NAMES), policy={"secure": "none"}),
                     tmp_path / "kits")
    server = kits / "server"
    signer = signing.kit_signer(server)
    assert signer is not None
    transport = GrpcServerTransport(
        "127.0.0.1:0", Gatekeeper.from_kit(server), server_credentials(server),
        trust=Trust((server / "ca.pem").read_bytes()),
        receipt=lambda run, rnd, who, sha: make_receipt(signer, run, rnd, who, sha))
    try:
        signing_one = table_of("cleveland", keys=kit_keys(kits / "cleveland"))
        unsigned = table_of("hungary")  # a TLS identity, but no key given to sign with
        threads = [start(kits, transport, "cleveland", signing_one.handle),
                   start(kits, transport, "hungary", unsigned.handle)]
        verdicts = fit_once(transport)
        assert verdicts["cleveland"] == "accepted"
        assert "carries no signature" in verdicts["hungary"]
    finally:
        transport.close(0.5)
    for t in threads:
        t.join(60)


def table_of(name, keys=None):
    path = HEART / "data" / f"processed.{FILES[name]}.data"
    return Institution(name, lambda read: read_table(path, read.get("columns"),
                                                     read.get("na_values")), keys=keys)


def fit_once(transport: GrpcServerTransport) -> dict[str, str]:
    """One real round of plain FedAvg on the heart data over `transport`: each institution's
    verdict ("accepted", or the reason it was rejected)."""
    cfg = load_config(HEART / "heart_disease.toml")
    cfg = cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"rounds": 1, "compare": False}),
        "strategy": cfg.strategy.model_copy(update={"min_clients": 1, "fraction": 1.0})})
    assert len(transport.wait_for_clients(2, 600)) == 2  # a hang guard: returns on joining
    schema = build_schema(cfg, pd.DataFrame(columns=cfg.data.columns or []))
    verdicts: dict[str, str] = {}

    def listener(ev: RoundEvent) -> None:
        verdicts.update({c: "accepted" for c in ev.participants})
        verdicts.update(ev.rejected)

    run_session(cfg, transport, schema, "unsigned-test", listener=listener, timeout=600,
                read={"columns": cfg.data.columns, "na_values": cfg.data.na_values})
    return verdicts
