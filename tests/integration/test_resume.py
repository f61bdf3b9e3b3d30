"""kill -9 of the server mid-run, then `fedsilo server --resume`: the run continues from its
last complete round and ends with the same model as an uninterrupted run; the institutions'
processes ride it out by reconnecting."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from fedsilo.store.run_store import RunStore
from fedsilo.transport.grpc.provision import Project, provision
from tests.integration.helpers import FILES, free_port, heart_config, institution, server

pytestmark = pytest.mark.integration
NAMES = list(FILES)
PLAIN = {"secure": "none"}  # these runs train plain FedAvg: the kits' policies allow it


def test_kill_9_server_then_resume_equals_an_uninterrupted_run(tmp_path):
    kits = tmp_path / "kits"
    provision(Project("heart", "localhost", tuple(NAMES), policy=PLAIN), kits)
    config = heart_config(tmp_path, rounds=8, compare=False, checkpoint_every=1)
    port = free_port()
    first = server(kits, config, port, tmp_path)
    clients = {n: institution(kits, n, port, tmp_path) for n in NAMES}
    second = None
    try:
        first.wait_for("round 4:", 600)
        first.kill(signal.SIGKILL)
        first.finish(300)
        (tmp_path / "server.log").rename(tmp_path / "server-killed.log")
        second = server(kits, config, port, tmp_path, "--resume")
        assert second.finish(900) == 0, second.text()
        for c in clients.values():
            assert c.finish(300) == 0, c.text()
        log = second.text()
    finally:
        for p in (first, second, *clients.values()):
            if p is not None:
                p.stop()
    assert "resuming run" in log and "round 8: 4 institutions" in log
    assert "round 1:" not in log  # it did not start over

    deployed = np.load(next((tmp_path / "results").glob("*/model.npz")))
    cfg = load_config(config)
    uninterrupted = run_simulation(cfg, write=False)
    for name, value in uninterrupted.history.params.items():
        np.testing.assert_allclose(deployed[name], value, rtol=1e-5, atol=1e-6)

    store = RunStore(tmp_path / "results")
    [run] = store.runs()
    assert run["status"] == "finished" and run["last"] == 8
    assert store.verify(run["run_id"]).ok
    digests = [p["update_digest"] for p in store.run(run["run_id"])["participation"]]
    assert len(digests) == 32 and all(len(d) == 64 for d in digests)  # hashed on receipt
    kinds = [e["kind"] for e in store.run(run["run_id"])["events"]]
    assert kinds[0] == "start" and "resume" in kinds and kinds[-1] == "finished"
