"""Federated gradient-boosted trees on XGBoost's own federated engine: equal to pooled
XGBoost, the report per boosting round, refusals of what trees cannot honour, mutual TLS."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.client.institution import Institution
from fedsilo.client.policy import SitePolicy
from fedsilo.client.xgb_trainer import XGBoostTrainer
from fedsilo.config.build import build_schema
from fedsilo.config.schema import RunConfig, parse_config
from fedsilo.core.messages import StageTask, Task, TaskKind
from fedsilo.data.prepare import local_data, pooled
from fedsilo.errors import ConfigError
from fedsilo.session import run_session
from fedsilo.simulation.institutions import load_tables
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.inprocess import InProcessTransport
from fedsilo.trees.boost import START, free_port
from fedsilo.trees.xgb import BoostJob, booster_params
from tests.conftest import EXAMPLES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytest.importorskip("xgboost", reason="needs the xgboost extra: pip install 'fedsilo[xgboost]'")
HEART = EXAMPLES / "heart_disease"
# XGBoost sums float32 gradient histograms; across 4 workers the sums are added in another
# order than on one, so predictions may differ in their last float32 bits (measured: 1.2e-7)
TOLERANCE = 1e-6


def heart(rounds: int = 10, compare: bool = False, **sections: Any) -> RunConfig:
    raw = tomllib.loads((HEART / "heart_disease_xgboost.toml").read_text())
    raw["run"].update(rounds=rounds, compare=compare)
    raw["store"] = {"enabled": False}
    raw.update(sections)
    return parse_config(raw, HEART.resolve())


def test_federated_trees_equal_pooled_trees_on_heart_disease() -> None:
    cfg = heart()
    tables = load_tables(cfg)
    schema = build_schema(cfg, next(iter(tables.values())))
    members = {n: Institution(n, t) for n, t in tables.items()}
    fed = run_session(cfg, InProcessTransport(dict(members)), schema, "fed")
    splits = [m.split(fed.setup["data"]) for m in members.values()]
    alone = Institution("pooled", split=pooled(splits))
    pool = run_session(cfg, InProcessTransport({"pooled": alone}), schema, "pooled",
                       classes=fed.preprocessor.classes)
    data = local_data(pooled(splits), fed.preprocessor)
    every_row = np.concatenate([data.x_train, data.x_test])
    trees = XGBoostTrainer(data, fed.setup["model"])
    fed_pred = trees.predict(fed.history.params, every_row)
    pool_pred = trees.predict(pool.history.params, every_row)
    assert np.abs(fed_pred - pool_pred).max() <= TOLERANCE
    assert [ev.round for ev in fed.history.events] == list(range(1, 11))  # per boosting round


def test_the_report_compares_local_federated_and_pooled_trees() -> None:
    result = run_simulation(heart(rounds=5, compare=True), write=False)
    assert result.comparison is not None
    overall = result.comparison.overall
    assert overall.federated == pytest.approx(overall.pooled, abs=1e-9)
    assert len(result.history.events) == 5
    assert result.history.events[-1].model_digest


@pytest.mark.parametrize("section", [
    {"aggregation": {"secure": "secagg+", "threshold": 2}},
    {"privacy": {"mode": "central"}},
    {"run": {"name": "t", "rounds": 3, "mode": "async"}},
    {"strategy": {"name": "fedprox"}},
])
def test_trees_refuse_what_their_engine_cannot_honour(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="gradient histograms in the clear"):
        heart(**section)


def test_params_belong_to_xgboost_only() -> None:
    raw = tomllib.loads((HEART / "heart_disease.toml").read_text())
    raw["model"]["params"] = {"max_depth": 3}
    with pytest.raises(ConfigError, match="params are XGBoost's"):
        parse_config(raw, HEART.resolve())


def stage(setup: dict[str, Any], tls: bool) -> Task:
    return Task("r", 1, 0, TaskKind.STAGE, "cleveland", {}, body=StageTask(START, {
        "address": "localhost:1", "world": 1, "rank": 0, "tls": tls}), setup=setup)


def test_a_deployed_institution_joins_a_tracker_only_over_tls() -> None:
    cfg = heart(rounds=2)
    tables = load_tables(cfg)
    fed = run_session(cfg, InProcessTransport({n: Institution(n, t)
                                               for n, t in tables.items()}),
                      build_schema(cfg, next(iter(tables.values()))), "setup")
    deployed = Institution("cleveland", tables["cleveland"],
                           policy=SitePolicy(secure="none"))
    reply = deployed.handle(stage(fed.setup, tls=False))
    assert reply.error is not None and "without TLS" in reply.error.reason
    strict = Institution("cleveland", tables["cleveland"], policy=SitePolicy())  # secagg+
    reply = strict.handle(stage(fed.setup, tls=True))
    assert reply.error is not None and reply.error.code == "policy_refused"
    assert "secagg+" in reply.error.reason


def test_the_tracker_refuses_a_worker_whose_certificate_another_ca_signed(tmp_path: Path
                                                                          ) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    provision(Project("p", "localhost", ("a",)), ours)
    provision(Project("q", "localhost", ("a",)), theirs)
    server = ours / "server"
    port = free_port()
    log = tmp_path / "tracker.log"
    with open(log, "w") as out:
        tracker = subprocess.Popen(
            [sys.executable, "-m", "fedsilo.trees.processes", "tracker", "1", str(port), "600",
             str(server / "server.key"), str(server / "server.pem"), str(server / "ca.pem")],
            stdout=out, stderr=subprocess.STDOUT)
    # trusts our tracker (our CA), but presents a certificate from another CA
    keys = {"ca.pem": (ours / "a" / "ca.pem").read_bytes(),
            "client.key": (theirs / "a" / "client.key").read_bytes(),
            "client.pem": (theirs / "a" / "client.pem").read_bytes()}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    from fedsilo.data.local_data import LocalData

    data = LocalData(x, (x[:, 0] > 0).astype(np.float32), x, x[:, 0], "binary", 2)
    job = BoostJob(data, booster_params({}, "binary", 2), 2, f"localhost:{port}", 1, 0, keys)
    try:
        deadline = time.monotonic() + 600  # a hang guard: we wait for the tracker's refusal
        while "Handshake failed" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            assert tracker.poll() is None, log.read_text()
            time.sleep(0.2)
        assert job._process.poll() is None or job._process.returncode != 0  # no model made
    finally:
        job.close()
        tracker.kill()
        tracker.wait()


def test_a_worker_asked_for_tls_without_a_kit_refuses_instead_of_joining_in_the_clear(
        ) -> None:
    from fedsilo.data.local_data import LocalData

    x = np.zeros((4, 2), np.float32)
    data = LocalData(x, np.zeros(4, np.float32), x, np.zeros(4, np.float32), "binary", 2)
    with pytest.raises(ConfigError, match="needs the kit's ca.pem"):
        BoostJob(data, booster_params({}, "binary", 2), 1, "localhost:1", 1, 0, {})
