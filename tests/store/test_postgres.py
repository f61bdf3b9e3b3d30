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
