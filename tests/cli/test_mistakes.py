"""Mistakes the README promises to stop with exit 2 and a message naming the problem, before
training starts: the heart-disease example with one thing wrong. A message that names a data
problem gives the institution, its file, the column and the kind of problem, never the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsilo.cli.main import main
from fedsilo.transport.grpc.provision import Project, provision
from tests.conftest import EXAMPLES
from tests.integration.helpers import FEDSILO, FILES, Proc, free_port, heart_config, server

HEART = EXAMPLES / "heart_disease"
HUNGARY = HEART / "data" / "processed.hungarian.data"
CHOL, TARGET = 4, 13  # column positions in the header-less heart files


def config(tmp_path: Path, hungary: Path | None = None, append: str = "",
           drop: tuple[str, ...] = ()) -> Path:
    """The heart example's config: data paths absolute, hungary's file replaced, the
    institutions in `drop` left out, `append` added at the end."""
    text = (HEART / "heart_disease.toml").read_text().replace('"data/', f'"{HEART}/data/')
    if hungary is not None:
        text = text.replace(str(HUNGARY), str(hungary))
    for name in drop:
        block = (f'[[data.institutions]]\nname = "{name}"\npath = '
                 f'"{HEART}/data/processed.{FILES[name]}.data"\n')
        assert block in text
        text = text.replace(block, "")
    path = tmp_path / "run.toml"
    path.write_text(text + append)
    return path


def hungary_with(tmp_path: Path, column: int, value: str, rows: int | None = 1,
                 keep: int | None = None) -> Path:
    """A copy of Hungary's file (processed.hungarian.data) with `value` in `column` of its
    first `rows` rows (None: every row), cut to its first `keep` rows."""
    lines = HUNGARY.read_text().splitlines()[:keep]
    for i in range(len(lines) if rows is None else rows):
        cells = lines[i].split(",")
        cells[column] = value
        lines[i] = ",".join(cells)
    path = tmp_path / HUNGARY.name
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


def run_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], cfg: Path) -> tuple[int, str]:
    code, out = run(capsys, "run", str(cfg), "--quiet", "--output", str(tmp_path / "results"))
    assert not (tmp_path / "results").exists(), "stopped before a run started"
    return code, out


def test_text_in_one_numeric_cell(tmp_path, capsys):
    cfg = config(tmp_path, hungary_with(tmp_path, CHOL, "high"))
    code, out = run_config(tmp_path, capsys, cfg)
    assert code == 2
    assert ("column 'chol' of institution 'hungary' (file processed.hungarian.data) has "
            "non-numeric text in 1 row(s)") in out
    assert "high" not in out  # the value itself never appears


def test_a_whole_column_of_text(tmp_path, capsys):
    cfg = config(tmp_path, hungary_with(tmp_path, CHOL, "high", rows=None))
    code, out = run_config(tmp_path, capsys, cfg)
    assert code == 2
    assert ("column 'chol' of institution 'hungary' (file processed.hungarian.data) has "
            "non-numeric text in all 294 non-missing row(s)") in out
    assert "data.categorical or data.exclude" in out and "high" not in out


def test_text_in_the_target(tmp_path, capsys):
    cfg = config(tmp_path, hungary_with(tmp_path, TARGET, "yes"))
    code, out = run_config(tmp_path, capsys, cfg)
    assert code == 2
    assert ("target column 'num' of institution 'hungary' (file processed.hungarian.data) "
            "has non-numeric text in 1 row(s): data.positive_above needs numbers") in out
    assert "yes" not in out and "malformed" not in out and "Traceback" not in out


def test_an_institution_with_one_row(tmp_path, capsys):
    cfg = config(tmp_path, hungary_with(tmp_path, CHOL, "", rows=0, keep=1))
    code, out = run_config(tmp_path, capsys, cfg)
    assert code == 2
    assert ("institution 'hungary' (file processed.hungarian.data) has 1 row(s) with a "
            "target, need at least 2") in out
    assert "ErrorInfo" not in out and "rejected" not in out


def test_readme_local_dp_snippet_on_the_heart_config(tmp_path, capsys):
    cfg = config(tmp_path, append='\n[privacy]\nmode = "local"\nmax_grad_norm = 1.0\n'
                                  'local_epsilon = { "*" = 3.0, cleveland = 1.0 }\n')
    assert "steps = 100" in cfg.read_text()
    code, out = run_config(tmp_path, capsys, cfg)
    assert code == 2
    assert "privacy.mode = 'local': DP-SGD trains in epochs" in out
    assert "set client.epochs instead of client.steps" in out
    assert "KeyError" not in out


def test_secure_aggregation_with_two_institutions(tmp_path, capsys):
    cfg = config(tmp_path, drop=("switzerland", "va-long-beach"),
                 append='\n[aggregation]\nsecure = "secagg+"\nthreshold = 2\n')
    code, out = run_config(tmp_path, capsys, cfg)
    assert code == 2
    assert ("aggregation.secure = 'secagg+' with 2 institution(s), 2 per round: threshold 2 "
            "needs at least 3 institutions in a round") in out
    assert "KeyError" not in out


def test_audit_of_a_store_that_does_not_exist(tmp_path, capsys):
    store = tmp_path / "nope.db"
    code, out = run(capsys, "audit", "verify", "RUN", "--store", str(store))
    assert code == 2 and f"no run store at {store}" in out
    assert not store.exists()


def test_dashboard_of_a_store_that_does_not_exist(tmp_path, capsys):
    folder = tmp_path / "results"
    code, out = run(capsys, "dashboard", "--store", str(folder), "--port", "0")
    assert code == 2 and f"no run store at {folder / 'fedsilo.db'}" in out
    assert not folder.exists()


@pytest.mark.integration
def test_a_kit_from_another_ca(tmp_path):
    """Kit B's institution against kit A's server: the institution cannot verify the server's
    certificate, so it stops at its first contact (no retrying) and says why."""
    ours, theirs = tmp_path / "kits", tmp_path / "other"
    provision(Project("heart", "localhost", tuple(FILES)), ours)
    provision(Project("heart", "localhost", tuple(FILES)), theirs)
    port = free_port()
    srv = server(ours, heart_config(tmp_path), port, tmp_path, "--wait", "3600")
    try:
        srv.wait_for("listening", 600)
        client = Proc([FEDSILO, "client", "--kit", str(theirs / "cleveland"), "--data",
                       str(HEART / "data" / "processed.cleveland.data"), "--address",
                       f"127.0.0.1:{port}"], tmp_path / "client.log")
        try:
            assert client.finish(600) == 2
        finally:
            client.stop()
        assert srv.p.poll() is None  # the server goes on waiting for its institutions
    finally:
        srv.stop()
    text = " ".join(client.text().split())
    assert (f"TLS handshake with the server at 127.0.0.1:{port} failed: its certificate is "
            f"not from this kit's CA") in text
    assert "retrying" not in text


@pytest.mark.integration
def test_broken_data_in_deployment_stops_the_server(tmp_path):
    """The institution checks its own file and sends the reason (no value); the server stops
    before training with exit 2, naming it, and tells the institutions the run is over."""
    kits = tmp_path / "kits"  # the run trains plain FedAvg: the kits' policies allow it
    provision(Project("heart", "localhost", tuple(FILES), policy={"secure": "none"}), kits)
    broken = hungary_with(tmp_path, CHOL, "high")
    port = free_port()
    srv = server(kits, heart_config(tmp_path), port, tmp_path, "--wait", "3600")
    clients = [Proc([FEDSILO, "client", "--kit", str(kits / name), "--data",
                     str(broken if name == "hungary" else
                         HEART / "data" / f"processed.{FILES[name]}.data"),
                     "--address", f"127.0.0.1:{port}"], tmp_path / f"{name}.log")
               for name in FILES]
    try:
        assert srv.finish(600) == 2
        codes = [c.finish(600) for c in clients]
    finally:
        for p in (srv, *clients):
            p.stop()
    text = " ".join(srv.text().split())
    assert ("column 'chol' of institution 'hungary' (file processed.hungarian.data) has "
            "non-numeric text in 1 row(s)") in text
    assert "round 1" not in text and "high" not in text
    assert codes == [0, 0, 0, 0]
