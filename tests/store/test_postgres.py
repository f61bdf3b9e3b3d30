"""The same run store on a real PostgreSQL server, started here from the installed PostgreSQL
binaries (Debian's postgresql package; scripts/setup-tests.sh installs it where apt-get is
available). Skipped, with the reason shown, where no PostgreSQL is installed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from fedsilo.store.run_store import RunStore
from tests.conftest import EXAMPLES
from tests.integration.helpers import free_port


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _postgres_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("postgres")
        return True
    except KeyError:
        return False


INITDB, PG_CTL = _bin("initdb"), _bin("pg_ctl")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    INITDB is None or PG_CTL is None,
    reason="PostgreSQL is not installed (initdb/pg_ctl not found; Debian: apt-get install "
           "postgresql)"), pytest.mark.skipif(
    os.geteuid() == 0 and not _postgres_user(),
    reason="running as root without a 'postgres' user to run the server as")]


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the 'postgres' user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url():
    root = Path(tempfile.mkdtemp(prefix="fedsilo-pg-"))  # not under pytest's root-only tmp
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(_as_postgres([INITDB, "-D", str(data), "-U", "postgres", "--auth=trust",
                                 "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([PG_CTL, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                                 f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
                                 "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([PG_CTL, "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_run_recorded_in_postgres_reads_back_and_verifies(postgres_url, tmp_path):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    cfg = cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"rounds": 3, "output_dir": str(tmp_path)}),
        "store": cfg.store.model_copy(update={"url": postgres_url})})
    result = run_simulation(cfg)
    store = RunStore(postgres_url)
    run_id = result.output_dir.name
    data = store.run(run_id)
    assert data["status"] == "finished" and len(data["rounds"]) == 3
    assert data["rounds"][-1]["federated"]["accuracy"] == pytest.approx(result.final["accuracy"])
    assert data["comparison"] is not None
    assert store.verify(run_id).ok
    assert not (Path(tmp_path) / "fedsilo.db").exists()  # nothing went to SQLite
    with store.engine.begin() as db:
        db.execute(text("UPDATE participation SET reason = 'x', status = 'rejected' "
                        "WHERE round = 2 AND institution = 'cleveland'"))
    verdict = store.verify(run_id)
    assert not verdict.ok and "round 2" in verdict.problem


def _with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@")  # trust auth: not checked


def test_long_names_and_nan_metrics_do_not_break_a_postgres_store(postgres_url):
    """PostgreSQL enforces column sizes (a 100-character metric name raised
    StringDataRightTruncation) and stores NaN where SQLite cannot: neither gets through."""
    from tests.store.helpers import event

    store = RunStore(postgres_url)
    store.start_run("long", "long", {}, "sync", "fedavg", "accuracy")
    inst = "hospital-" * 30
    store.record("long", event(1, {inst: {"m" * 100: 0.5, "accuracy": float("nan")},
                                   "b": {"accuracy": float("inf")}},
                               {"accuracy": float("nan")}, {"aggregator": {"epsilon": 1.5}}))
    data = store.run("long")
    assert [(len(m["institution"]), len(m["name"])) for m in data["institution_metrics"]] == \
        [(200, 80)]
    assert data["rounds"][0]["federated"] == {"accuracy": None}
    assert store.verify("long").ok


def test_the_dashboard_serves_strict_json_from_nan_in_postgres(postgres_url):
    import json
    import urllib.request

    from fedsilo.dashboard.server import Dashboard
    from tests.store.helpers import event

    store = RunStore(postgres_url)
    store.start_run("nan", "nan", {}, "sync", "fedavg", "accuracy")
    store.record("nan", event(1, {"a": {"accuracy": 0.5}}))
    with store.engine.begin() as db:  # a value an older version let through
        db.execute(text("UPDATE rounds SET epsilon = 'NaN'::float8, seconds = 'Infinity' "
                        "WHERE run_id = 'nan'"))
        db.execute(text("UPDATE institution_metrics SET value = 'NaN'::float8 "
                        "WHERE run_id = 'nan'"))
    board = Dashboard(store, port=0).start()
    try:
        body = urllib.request.urlopen(f"{board.url}api/runs/nan", timeout=120).read()
    finally:
        board.stop()
    data = json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["rounds"][0]["epsilon"] is None and data["rounds"][0]["seconds"] is None
    assert data["institution_metrics"][0]["value"] is None


def test_the_password_of_a_postgres_url_is_never_shown(postgres_url, tmp_path, capsys,
                                                       monkeypatch):
    from tests.store.helpers import cli

    password = "Pw-never-shown-7"
    url = _with_password(postgres_url, password)
    store = RunStore(url)
    assert password not in store.url and ":***@" in store.url
    code, out = cli(capsys, monkeypatch, "audit", "verify", "x", "--store", url)
    assert code == 2 and f"no run 'x' in {store.url}" in out and password not in out
    store.start_run("pw", "pw", {"store": {"url": url}}, "sync", "fedavg", "accuracy")
    assert store.run("pw")["config"]["store"]["url"] == store.url  # as the dashboard serves it
    with store.engine.connect() as db:
        assert password not in db.execute(text("SELECT config FROM runs WHERE run_id = 'pw'")
                                           ).scalar()
