"""The CLI exits non-zero with a message naming the problem; a good config produces results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.cli.main import main
from tests.conftest import EXAMPLES, ROOT

HEART = EXAMPLES / "heart_disease"


def heart_config(tmp_path: Path, replace: tuple[str, str] | None = None,
                 append: str = "") -> Path:
    text = (HEART / "heart_disease.toml").read_text().replace('"data/', f'"{HEART}/data/')
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / "run.toml"
    path.write_text(text + append)
    return path


def run_cli(args, capsys):
    code = main([*args, "--quiet"])
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


def test_unknown_key_is_named(tmp_path, capsys):
    cfg = heart_config(tmp_path, ("rounds = 15", "rounds = 15\nroundz = 3"))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "unknown key 'run.roundz'" in out


def test_wrong_type_is_named(tmp_path, capsys):
    cfg = heart_config(tmp_path, ("rounds = 15", 'rounds = "many"'))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "run.rounds" in out and "many" in out


def test_unknown_strategy_is_named(tmp_path, capsys):
    cfg = heart_config(tmp_path, ('name = "fedavg"', 'name = "fedmagic"'))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "strategy.name" in out and "fedmagic" in out


def test_missing_csv_is_named(tmp_path, capsys):
    cfg = heart_config(tmp_path, ("processed.va.data", "processed.nowhere.data"))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "data file not found" in out and "processed.nowhere.data" in out


def test_missing_column_is_named(tmp_path, capsys):
    cfg = heart_config(tmp_path, ('categorical = ["cp", "restecg"]',
                                  'categorical = ["cp", "restecg", "smoker"]'))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "missing column(s) ['smoker']" in out


def test_missing_config_file_is_named(tmp_path, capsys):
    code, out = run_cli(["run", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and "run config not found" in out


def test_invalid_toml_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname=")
    code, out = run_cli(["run", str(bad)], capsys)
    assert code == 2 and "not valid TOML" in out


def test_run_writes_results_folder(tmp_path, capsys):
    cfg = heart_config(tmp_path)
    code, out = run_cli(["run", str(cfg), "--rounds", "3", "--output", str(tmp_path / "res")],
                        capsys)
    assert code == 0, out
    [folder] = [p for p in (tmp_path / "res").iterdir() if p.is_dir()]
    assert (tmp_path / "res" / "fedsilo.db").is_file()  # the run store, beside the run folders
    names = {p.name for p in folder.iterdir()}
    assert {"history.json", "history.csv", "comparison.json", "comparison.csv",
            "metrics.png", "model.npz", "config.json", "checkpoint.npz"} <= names
    history = json.loads((folder / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2, 3]
    assert (folder / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Does collaborating pay?" in out


@pytest.mark.integration
def test_demo_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("fedsilo")
    env = {**os.environ, "FEDSILO_EXAMPLES": str(EXAMPLES)}
    done = subprocess.run([str(exe), "demo", "--rounds", "2", "--output", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "federated accuracy" in done.stdout and "after 2 rounds" in done.stdout
