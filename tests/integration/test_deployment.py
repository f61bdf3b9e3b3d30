"""1 server + 4 institution processes over mutual TLS on 127.0.0.1: same model as simulation,
a kill -9 survived, refusals of bad identities logged, graceful SIGTERM."""

from __future__ import annotations

import re
import signal

import numpy as np
import pytest

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.grpc.provision import Project, provision
from tests.integration.helpers import FILES, federation, institution

pytestmark = pytest.mark.integration
NAMES = list(FILES)


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    root = tmp_path_factory.mktemp("kits") / "kits"
    provision(Project("heart", "localhost", tuple(NAMES)), root)
    return root


def test_grpc_run_equals_simulation(kits, tmp_path):
    with federation(kits, tmp_path, NAMES, rounds=5) as (srv, clients, _):
        assert srv.finish(180) == 0, srv.text()
        assert all(c.finish(30) == 0 for c in clients.values())
    log = srv.text()
    assert "mutual TLS" in log and "round 5: 4 institutions" in log
    deployed = np.load(next((tmp_path / "results").glob("*/model.npz")))
    cfg = load_config(tmp_path / "run.toml")
    simulated = run_simulation(cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"compare": False})}), write=False)
    for name, value in simulated.history.params.items():
        np.testing.assert_allclose(deployed[name], value, rtol=1e-5, atol=1e-6)
    accuracy = float(re.findall(r"round 5: 4 institutions, accuracy ([0-9.]+)", log)[0])
    assert accuracy == pytest.approx(simulated.final["accuracy"], abs=1e-4)


def test_kill_9_mid_run_then_rejoin(kits, tmp_path):
    with federation(kits, tmp_path, NAMES, rounds=40, round_timeout=4.0) as (srv, clients,
                                                                              port):
        srv.wait_for("round 3:", 120)
        clients["va-long-beach"].kill(signal.SIGKILL)
        srv.wait_for(": 3 institutions", 60)
        clients["va-long-beach-2"] = institution(kits, "va-long-beach", port, tmp_path / "..")
        assert srv.finish(240) == 0, srv.text()
        text = srv.text()
    rounds = [(int(r), int(k)) for r, k in re.findall(r"round (\d+): (\d) institutions", text)]
    assert len(rounds) == 40
    dropped = [r for r, k in rounds if k == 3]
    assert dropped, "no round ran with the killed institution missing"
    assert any(k == 4 for r, k in rounds if r > max(dropped)), "the institution never rejoined"


def test_sigterm_stops_server_and_clients_gracefully(kits, tmp_path):
    with federation(kits, tmp_path, NAMES, rounds=500) as (srv, clients, _):
        srv.wait_for("round 2:", 120)
        first, *others = clients.values()
        first.kill(signal.SIGTERM)
        assert first.finish(30) == 0
        assert "done" in first.text()
        srv.kill(signal.SIGTERM)
        assert srv.finish(30) == 143
        assert "server stopping on signal" in srv.text()
        for c in others:  # told the run is over, they exit cleanly
            assert c.finish(60) == 0, c.text()
