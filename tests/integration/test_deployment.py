"""1 server + 4 institution processes over mutual TLS on 127.0.0.1: same model as simulation,
a kill -9 survived, refusals of bad identities logged, graceful SIGTERM."""

from __future__ import annotations

import re
import signal

import numpy as np
import pytest

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from fedsilo.store.run_store import RunStore
from fedsilo.transport.grpc.provision import Project, provision
from tests.integration.helpers import FILES, federation, institution

pytestmark = pytest.mark.integration
NAMES = list(FILES)
PLAIN = {"secure": "none"}  # these runs train plain FedAvg: the kits' policies allow it


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    root = tmp_path_factory.mktemp("kits") / "kits"
    provision(Project("heart", "localhost", tuple(NAMES), policy=PLAIN), root)
    return root


def test_grpc_run_equals_simulation(kits, tmp_path):
    with federation(kits, tmp_path, NAMES, rounds=5) as (srv, clients, _):
        assert srv.finish(900) == 0, srv.text()
        assert all(c.finish(300) == 0 for c in clients.values())
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
    """An institution's process is killed mid-run and restarted: no round is lost, the new
    process answers the task its predecessor left open, the others contribute to every round
    and the restarted institution to every round after it rejoined. No deadline decides
    anything (the server's default round_timeout is minutes)."""
    rounds = 12
    with federation(kits, tmp_path, NAMES, rounds=rounds) as (srv, clients, port):
        srv.wait_for("round 3:", 600)
        clients["va-long-beach"].kill(signal.SIGKILL)
        clients["va-long-beach"].finish(300)
        restarted = institution(kits, "va-long-beach", port, tmp_path / "..")
        clients["va-long-beach-2"] = restarted
        assert srv.finish(900) == 0, srv.text()
        assert restarted.finish(600) == 0, restarted.text()
        text = srv.text()
    assert "aborted" not in text
    counted = [int(r) for r in re.findall(r"round (\d+): \d institutions", text)]
    assert counted == list(range(1, rounds + 1))
    store = RunStore(tmp_path / "results")
    [run] = store.runs()
    assert run["status"] == "finished" and store.verify(run["run_id"]).ok
    accepted: dict[int, set[str]] = {r: set() for r in range(1, rounds + 1)}
    for p in store.run(run["run_id"])["participation"]:
        if p["status"] == "accepted":
            accepted[p["round"]].add(p["institution"])
    survivors = set(NAMES) - {"va-long-beach"}
    assert all(survivors <= who for who in accepted.values()), accepted
    back = min(r for r, who in accepted.items() if r > 3 and "va-long-beach" in who)
    assert all("va-long-beach" in accepted[r] for r in range(back, rounds + 1)), accepted
    assert "tasks answered" in restarted.text()


def test_sigterm_stops_server_and_clients_gracefully(kits, tmp_path):
    with federation(kits, tmp_path, NAMES, rounds=500) as (srv, clients, _):
        srv.wait_for("round 2:", 600)
        first, *others = clients.values()
        first.kill(signal.SIGTERM)
        assert first.finish(300) == 0
        assert "done" in first.text()
        srv.kill(signal.SIGTERM)
        assert srv.finish(300) == 143
        assert "server stopping on signal" in srv.text()
        for c in others:  # told the run is over, they exit cleanly
            assert c.finish(300) == 0, c.text()
