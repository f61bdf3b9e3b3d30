"""What the CLI says after a run is true: rounds actually trained, non-private references
under DP, which average a figure is, a table that fits the terminal; the server names the
institutions that did not join."""

import json
import os
import subprocess
from pathlib import Path

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from tests.cli.test_cli import HEART, heart_config
from tests.integration.helpers import FEDSILO, free_port

BUDGET = """
[privacy]
mode = "central"
noise_multiplier = 1.0
clip_norm = 1.0
target_epsilon = 8.0
"""
PERSONAL = """
[personalization]
finetune_epochs = 1
ditto_lambda = 0.1
"""


def cli(args: list[str], cwd: Path, columns: int = 80) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    done = subprocess.run([FEDSILO, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)
    return done.returncode, done.stdout + done.stderr


def test_budget_stop_is_said_once_with_the_rounds_trained(tmp_path):
    cfg = heart_config(tmp_path, ("rounds = 15", "rounds = 3"), append=BUDGET + PERSONAL)
    code, out = cli(["run", str(cfg), "--quiet", "--output", str(tmp_path / "r")], tmp_path)
    assert code == 0, out
    assert out.count("privacy budget") == 1, out
    assert "after 2 of 3 planned rounds" in out and "after 3 rounds" not in out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out  # fits an 80-column terminal
    assert "…" not in out  # and nothing in the table is cut
    assert "no-DP: the same federation without DP" in " ".join(out.split())
    assert "weighted by test rows" in out


def test_references_are_trained_without_dp(tmp_path):
    private = load_config(heart_config(tmp_path, ("rounds = 15", "rounds = 3"),
                                       append=BUDGET))
    plain = private.model_copy(update={"privacy": type(private.privacy)()})
    with_dp = run_simulation(private, write=False).comparison
    without = run_simulation(plain, write=False).comparison
    assert with_dp is not None and without is not None
    for a, b in zip((*with_dp.rows, with_dp.overall), (*without.rows, without.overall),
                    strict=True):
        assert (a.local_only, a.local_only_everywhere, a.pooled) == (
            b.local_only, b.local_only_everywhere, b.pooled)
        assert a.federated_no_dp is not None
    assert without.overall.federated_no_dp is None  # no DP: no such column
    # the no-DP column is the same federation without DP: the plain run's federated figure
    assert with_dp.overall.federated_no_dp == without.overall.federated


def test_wide_table_when_the_terminal_is_wide(tmp_path):
    cfg = heart_config(tmp_path, ("rounds = 15", "rounds = 2"), append=PERSONAL)
    code, out = cli(["run", str(cfg), "--quiet", "--output", str(tmp_path / "r")], tmp_path,
                    columns=200)
    assert code == 0, out
    assert "local-only (all tests)" in out and "finetuned (personal)" in out
    saved = json.loads(next((tmp_path / "r").glob("*/comparison.json")).read_text())
    assert saved["overall"]["federated_no_dp"] is None


def test_server_names_institutions_that_did_not_join(tmp_path):
    kits = tmp_path / "kits"
    code, out = cli(["provision", str(HEART / "project.toml"), "--out", str(kits)], tmp_path)
    assert code == 0, out
    cfg = heart_config(tmp_path)
    code, out = cli(["server", "--kit", str(kits / "server"), "--config", str(cfg),
                     "--address", f"127.0.0.1:{free_port()}", "--wait", "0.5",
                     "--output", str(tmp_path / "r")], tmp_path)
    assert code == 2, out
    flat = " ".join(out.split())
    assert "0 of 4 institutions joined" in flat
    assert "missing: cleveland, hungary, switzerland, va-long-beach" in flat

