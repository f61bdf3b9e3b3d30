"""Federated XGBoost deployed: 1 server + 4 hospital processes over mutual TLS (fedsilo's
gRPC and XGBoost's tracker, both with the kits' certificates) equals its simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.client.xgb_trainer import XGBoostTrainer
from fedsilo.config.schema import load_config
from fedsilo.data.local_data import LocalData
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.grpc.provision import Project, provision
from tests.integration.helpers import (
    FEDSILO,
    FILES,
    HEART,
    Proc,
    free_port,
    institution,
    run_to_end,
)

pytestmark = pytest.mark.integration
pytest.importorskip("xgboost", reason="needs the xgboost extra: pip install 'fedsilo[xgboost]'")
NAMES = list(FILES)


def test_trees_over_grpc_and_tls_equal_their_simulation(tmp_path: Path) -> None:
    kits = tmp_path / "kits"
    provision(Project("heart", "localhost", tuple(NAMES), policy={"secure": "none"}), kits)
    text = (HEART / "heart_disease_xgboost.toml").read_text()
    config = tmp_path / "run.toml"
    config.write_text(text.replace('"data/', f'"{HEART}/data/').replace("rounds = 20",
                                                                         "rounds = 5"))
    port = free_port()
    srv = Proc([FEDSILO, "server", "--kit", str(kits / "server"), "--config", str(config),
                "--address", f"127.0.0.1:{port}", "--tracker-port", str(free_port()),
                "--output", str(tmp_path / "results")], tmp_path / "server.log")
    log = run_to_end(srv, [institution(kits, n, port, tmp_path) for n in NAMES])
    assert "round 5: 4 institutions" in log and "Federated server listening" in log
    deployed = dict(np.load(next((tmp_path / "results").glob("*/model.npz"))))
    cfg = load_config(config)
    simulated = run_simulation(cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"compare": False})}), write=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(simulated.feature_names))).astype(np.float32)
    scorer = XGBoostTrainer(LocalData(x, x[:, 0], x, x[:, 0], "binary", 2), {})
    np.testing.assert_allclose(scorer.predict(deployed, x),
                               scorer.predict(simulated.history.params, x), atol=1e-6)
