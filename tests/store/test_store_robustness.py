"""The run store never stops a run, stores no NaN/Inf where a number must be, and never
overflows a column; a results folder that cannot be written (disk full, read-only, a file in
the way) stops the run with exit 2 and its path; a run is finished only once its model and
its last checkpoint are on disk."""

from __future__ import annotations

import json
import logging
import sqlite3

import numpy as np
import pytest
from sqlalchemy import text

from fedsilo.algorithms.base import ServerState
from fedsilo.errors import ConfigError
from fedsilo.optim.base import OptState
from fedsilo.simulation.run import run_simulation
from fedsilo.store.checkpoint import load_checkpoint, save_checkpoint
from fedsilo.store.recorder import Recorder
from fedsilo.store.run_store import RunStore
from fedsilo.store.values import strict_json
from tests.integration.helpers import heart_config
from tests.store.helpers import at_rounds, cli, event, fill, heart, tmpfs

NAN, INF = float("nan"), float("inf")
STATE = ServerState({"w": np.ones(3, np.float32)}, 1, OptState(1, {}))


def _config(tmp_path):
    return heart_config(tmp_path, rounds=2, compare=False)


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


# numbers and strings ------------------------------------------------------------------------
def test_nan_and_inf_metrics_are_stored_as_missing(tmp_path, caplog):
    store = RunStore(tmp_path)
    store.start_run("r", "r", {"x": INF}, "sync", "fedavg", "accuracy")
    store.record("r", event(1, {"a": {"accuracy": NAN, "loss": 0.5}, "b": {"accuracy": INF}},
                            {"accuracy": NAN, "loss": -INF},
                            {"aggregator": {"epsilon": INF}, "clock": {"time": NAN}}))
    store.finish("r", comparison={"overall": {"federated": NAN}})
    data = store.run("r")
    assert [(m["institution"], m["name"], m["value"]) for m in data["institution_metrics"]] \
        == [("a", "loss", 0.5)]
    [row] = data["rounds"]
    assert row["epsilon"] is None and row["clock_time"] is None
    assert row["federated"] == {"accuracy": None, "loss": None}
    assert data["comparison"]["overall"]["federated"] is None
    assert data["config"] == {"x": None}
    assert store.verify("r").ok
    _strict(strict_json(data))
    assert "2 metric value(s) not finite" in caplog.text


def test_names_longer_than_their_columns_are_shortened_consistently(tmp_path):
    store = RunStore(tmp_path)
    store.start_run("r", "r", {}, "sync", "fedavg", "accuracy")
    long_metric, long_inst = "m" * 100, "hospital-" * 30  # 80 and 200 characters fit
    store.record("r", event(1, {long_inst: {long_metric: 0.5, "m" * 99 + "x": 0.6},
                                "b": {"accuracy": 0.7}}))
    data = store.run("r")
    names = {m["name"] for m in data["institution_metrics"]}
    assert len(names) == 3 and max(len(n) for n in names) == 80  # still distinct
    insts = {p["institution"] for p in data["participation"]}
    assert "b" in insts and max(len(i) for i in insts) == 200
    assert store.verify("r").ok  # the audit entry holds the same shortened names


def test_a_run_name_too_long_for_the_store_stops_before_anything_is_written(
        tmp_path, capsys, monkeypatch):
    config = _config(tmp_path)
    config.write_text(config.read_text().replace('name = "heart-disease"',
                                                 f'name = "{"x" * 181}"'))
    code, out = cli(capsys, monkeypatch, "run", str(config), "--output", str(tmp_path / "out"),
                    "--quiet")
    assert code == 2
    assert "run.name is 181 characters; the run store holds names of up to 180" in out
    assert not (tmp_path / "out").exists()


# failing writes -----------------------------------------------------------------------------
def test_a_store_locked_mid_run_gets_every_round_once_it_is_free(tmp_path, caplog):
    """Another process holds an exclusive lock on the SQLite file from after round 2 to
    after round 4: rounds 3 and 4 are kept in memory and written with round 5."""
    lock = sqlite3.connect(tmp_path / "fedsilo.db", isolation_level=None)
    actions = {2: lambda: lock.execute("BEGIN EXCLUSIVE"), 4: lambda: lock.execute("ROLLBACK")}
    with caplog.at_level(logging.WARNING, "fedsilo.store"):
        result = run_simulation(heart(tmp_path, rounds=6), phase=at_rounds(actions))
    lock.close()
    store = RunStore(tmp_path)
    data = store.run(result.output_dir.name)
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3, 4, 5, 6]
    assert data["status"] == "finished" and store.verify(data["run_id"]).ok
    assert "could not write round 3 (OperationalError: database is locked)" in caplog.text
    assert "could not write round 4" not in caplog.text  # queued behind round 3
    assert "3 kept write(s) recorded" in caplog.text


def test_a_store_on_a_full_disk_does_not_stop_the_run(tmp_path, caplog):
    """The store's disk fills after round 2 and stays full: the run trains to the end and
    writes its results; the store keeps rounds 1-2; what it lacks is logged."""
    with tmpfs(tmp_path / "db", "2m") as disk:
        cfg = heart(tmp_path / "results", rounds=5, store_url=f"sqlite:///{disk}/fedsilo.db")
        with caplog.at_level(logging.WARNING, "fedsilo.store"):
            result = run_simulation(cfg, phase=at_rounds({2: lambda: fill(disk)}))
        assert (result.output_dir / "model.npz").is_file()
        assert len(json.loads((result.output_dir / "history.json").read_text())) == 5
        (disk / "filler").unlink()
        data = RunStore(f"sqlite:///{disk}/fedsilo.db").run(result.output_dir.name)
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert data["status"] == "running"  # its end could not be written either
    assert "could not write round 3 (OperationalError: database or disk is full)" in caplog.text
    assert "4 write(s) could not be recorded (round 3 ... the end of run" in caplog.text


def test_a_write_the_database_refuses_is_dropped_and_the_next_rounds_go_on(tmp_path, caplog):
    store = RunStore(tmp_path)
    recorder = Recorder(store, "r", tmp_path / "r", rounds=3, checkpoint_every=0)
    recorder.start("r", {}, "sync", "fedavg", "accuracy")
    recorder(event(1, {"a": {"accuracy": 0.5}}))
    recorder(event(1, {"a": {"accuracy": 0.5}}))  # the same round again: a duplicate key
    recorder(event(2, {"a": {"accuracy": 0.6}}))
    recorder.finish()
    assert [r["round"] for r in store.run("r")["rounds"]] == [1, 2]
    assert "round 1 refused (IntegrityError: UNIQUE constraint failed" in caplog.text
    assert "0.5" not in caplog.text  # no data value in the message


# the results folder -------------------------------------------------------------------------
def test_a_full_disk_before_the_run_is_exit_2_with_the_path(tmp_path, capsys, monkeypatch):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk)
        code, out = cli(capsys, monkeypatch, "run", str(_config(tmp_path)), "--output",
                        str(disk), "--quiet")
    assert code == 2, out
    assert f"{disk}/fedsilo.db" in out and "database or disk is full" in out


def test_a_disk_that_fills_mid_run_keeps_the_last_checkpoint_and_stops_with_the_path(
        tmp_path, caplog):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        cfg = heart(disk, rounds=4, store_url=f"sqlite:///{tmp_path}/fedsilo.db")
        with pytest.raises(ConfigError) as err, caplog.at_level(logging.WARNING):
            run_simulation(cfg, phase=at_rounds({2: lambda: fill(disk)}))
        [folder] = [p for p in disk.iterdir() if p.is_dir()]
        assert load_checkpoint(folder).round == 1  # round 2's could not be written
    assert f"cannot write the results at {folder}" in str(err.value)
    assert "No space left on device; free space on that disk" in str(err.value)
    assert "cannot write the checkpoint" in caplog.text and "The run goes on" in caplog.text
    data = RunStore(tmp_path).run(folder.name)
    assert len(data["rounds"]) == 4 and data["status"] == "failed"


def test_a_read_only_results_folder_is_exit_2_with_the_path(tmp_path, capsys, monkeypatch):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        code, out = cli(capsys, monkeypatch, "run", str(_config(tmp_path)), "--output",
                        str(ro / "results"), "--quiet")
    assert code == 2, out
    assert f"cannot write the results folder at {ro}/results" in out
    assert "Read-only file system" in out


def test_a_file_where_the_results_folder_should_be_is_exit_2_with_the_path(
        tmp_path, capsys, monkeypatch):
    (tmp_path / "results").write_text("not a folder")
    code, out = cli(capsys, monkeypatch, "run", str(_config(tmp_path)), "--output",
                    str(tmp_path / "results"), "--quiet")
    assert code == 2 and f"{tmp_path}/results" in out and "Not a directory" in out


def test_a_checkpoint_on_a_read_only_disk_names_its_path_and_leaves_nothing(tmp_path):
    save_checkpoint(tmp_path, 1, STATE)
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro, \
            pytest.raises(ConfigError, match=f"cannot write the checkpoint at {ro}"):
        save_checkpoint(ro, 1, STATE)


# finished means: model and last checkpoint on disk -------------------------------------------
def test_finishing_checkpoints_the_last_state_first(tmp_path):
    store = RunStore(tmp_path)
    recorder = Recorder(store, "r", tmp_path / "r", rounds=10, checkpoint_every=5)
    recorder.start("r", {}, "sync", "fedavg", "accuracy")
    for rnd in (1, 2, 3):  # the run stopped early (privacy budget): no checkpoint was due
        recorder.checkpoint(rnd, STATE)
    assert load_checkpoint(tmp_path / "r") is None
    recorder.finish()
    assert load_checkpoint(tmp_path / "r").round == 3
    assert store.run("r")["status"] == "finished"


def test_a_run_whose_last_checkpoint_cannot_be_written_is_failed_not_finished(tmp_path):
    store = RunStore(tmp_path)
    (tmp_path / "r").write_text("a file where the run's folder should be")
    recorder = Recorder(store, "r", tmp_path / "r", rounds=2, checkpoint_every=1)
    recorder.start("r", {}, "sync", "fedavg", "accuracy")
    recorder.checkpoint(1, STATE)  # logged, the run goes on
    with pytest.raises(ConfigError, match=f"cannot write the checkpoint at {tmp_path}/r"):
        recorder.finish()
    assert store.run("r")["status"] == "failed"


def test_a_simulated_run_is_finished_with_its_model_and_checkpoint(tmp_path):
    result = run_simulation(heart(tmp_path, rounds=2, checkpoint_every=5))
    assert (result.output_dir / "model.npz").is_file()
    assert load_checkpoint(result.output_dir).round == 2
    assert RunStore(tmp_path).run(result.output_dir.name)["status"] == "finished"


def test_the_store_keeps_nan_out_of_old_rows_it_serves(tmp_path):
    """A row written before these checks (NaN inside its JSON) still reads as strict JSON."""
    store = RunStore(tmp_path)
    store.start_run("r", "r", {}, "sync", "fedavg", "accuracy")
    store.record("r", event(1, {"a": {"accuracy": 0.5}}))
    with store.engine.begin() as db:
        db.execute(text("UPDATE rounds SET federated = '{\"accuracy\": NaN}'"))
    _strict(strict_json(store.run("r")))
