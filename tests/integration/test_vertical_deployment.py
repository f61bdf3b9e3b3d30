"""A vertical run deployed: `fedsilo server` (relay and Hetero-LR arbiter) and two party
processes (hospital: demographics and the outcome; laboratory: assay results) over gRPC with
mutual TLS equal the same run simulated; the server's folder and run store hold the label
holder's metrics and a verified audit chain; a party whose policy does not allow the protocol
refuses it, and the server stops with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsilo.config.schema import load_config
from fedsilo.simulation.vertical import run_vertical
from fedsilo.store.run_store import RunStore
from fedsilo.transport.grpc.provision import Project, provision
from tests.conftest import EXAMPLES
from tests.integration.helpers import FEDSILO, Proc, free_port, run_to_end

pytestmark = pytest.mark.integration
VERTICAL = EXAMPLES / "heart_vertical"
PARTIES = ("hospital", "laboratory")


def deploy(tmp: Path, kind: str, policy: dict[str, object]) -> tuple[Proc, list[Proc], Path]:
    kits = tmp / "kits"
    provision(Project("heart-vertical", "localhost", PARTIES, policy=policy), kits)
    text = (VERTICAL / "heart_vertical.toml").read_text()
    config = tmp / "run.toml"
    config.write_text(text.replace('kind = "logistic_regression"', f'kind = "{kind}"')
                      .replace('"data/', f'"{VERTICAL}/data/')
                      .replace("epochs = 10", "epochs = 3"))
    port = free_port()
    srv = Proc([FEDSILO, "server", "--kit", str(kits / "server"), "--config", str(config),
                "--address", f"127.0.0.1:{port}", "--output", str(tmp / "results")],
               tmp / "server.log")
    parties = [Proc([FEDSILO, "client", "--kit", str(kits / p), "--data",
                     str(VERTICAL / "data" / f"{p}.csv"), "--address", f"127.0.0.1:{port}"],
                    tmp / f"{p}.log") for p in PARTIES]
    return srv, parties, config


@pytest.mark.parametrize("kind", ["logistic_regression", "mlp"])
def test_vertical_over_grpc_equals_its_simulation(tmp_path: Path, kind: str) -> None:
    srv, parties, config = deploy(tmp_path, kind,
                                  {"vertical": ["hetero_lr", "split_learning"]})
    log = run_to_end(srv, parties)
    assert "private set intersection: 736 shared rows" in log
    folder = next((tmp_path / "results").glob("heart-vertical-*"))
    deployed = json.loads((folder / "comparison.json").read_text())
    simulated = run_vertical(load_config(config), write=False).metrics
    for label in ("vertical", "label holder alone"):
        ours, theirs = deployed["references"][label], simulated[label]
        assert ours["accuracy"] == theirs["accuracy"]
        # Hetero-LR: CKKS decryptions carry ~1e-6 noise; split learning is bit for bit
        tol = 1e-6 if kind == "logistic_regression" else 0.0
        assert ours["log_loss"] == pytest.approx(theirs["log_loss"], abs=tol)
    store = RunStore(tmp_path / "results")
    run = store.run(folder.name)
    assert run["status"] == "finished" and run["mode"] == "vertical"
    assert run["comparison"]["references"]["vertical"]["accuracy"] == deployed[
        "references"]["vertical"]["accuracy"]
    assert store.verify(folder.name, ca=(tmp_path / "kits" / "server" / "ca.pem").read_bytes()).ok


def test_a_party_whose_policy_forbids_split_learning_refuses(tmp_path: Path) -> None:
    srv, parties, _ = deploy(tmp_path, "mlp", {})  # default policy: Hetero-LR only
    try:
        assert srv.finish(600) == 1  # a refused run: exit 1, with the party's reason
        text = srv.text()
        assert "site policy allows vertical protocols ['hetero_lr']" in text, text
        assert "split_learning" in text
    finally:
        for p in (srv, *parties):
            p.stop()
