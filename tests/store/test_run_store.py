"""The run store records a run as it happens; the audit chain catches an edited row."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from fedsilo.cli.main import main
from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from fedsilo.store.run_store import RunStore
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={
        "rounds": 4, "output_dir": str(out)})})
    result = run_simulation(cfg)
    return out, result


def test_a_simulation_records_rounds_participants_metrics_and_comparison(recorded):
    out, result = recorded
    store = RunStore(out)
    [run] = store.runs()
    assert run["status"] == "finished" and run["last"] == 4 and run["strategy"] == "fedavg"
    data = store.run(run["run_id"])
    assert data["run_id"] == result.output_dir.name
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3, 4]
    last = data["rounds"][-1]
    assert last["federated"]["accuracy"] == pytest.approx(result.final["accuracy"])
    accepted = [p for p in data["participation"] if p["round"] == 4]
    assert sorted(p["institution"] for p in accepted) == sorted(result.history.events[-1]
                                                                .participants)
    assert all(len(p["update_digest"]) == 64 for p in accepted)
    by_inst = {m["institution"]: m["value"] for m in data["institution_metrics"]
               if m["round"] == 4 and m["name"] == "accuracy"}
    assert by_inst == pytest.approx({k: v["accuracy"] for k, v in
                                     result.history.events[-1].evaluation.items()})
    assert data["comparison"]["overall"]["federated"] == pytest.approx(result.final["accuracy"])
    assert data["config"]["run"]["rounds"] == 4
    assert [e["kind"] for e in data["events"]] == ["start", "finished"]


def test_the_model_digest_is_the_final_model(recorded):
    out, result = recorded
    from fedsilo.core.params import digest

    data = RunStore(out).run(result.output_dir.name)
    model = dict(np.load(result.output_dir / "model.npz"))
    assert data["rounds"][-1]["model_digest"] == digest(model)


def _tamper(out, statement):
    store = RunStore(out)
    with store.engine.begin() as db:
        db.execute(text(statement))


@pytest.mark.parametrize("statement,where", [
    ("UPDATE participation SET update_digest = 'ff' WHERE round = 2 AND institution = "
     "'hungary'", "round 2"),
    ("UPDATE rounds SET model_digest = 'ee' WHERE round = 3", "round 3"),
    ("UPDATE audit SET entry = replace(entry, 'cleveland', 'clevelanx') WHERE round = 1",
     "round 1"),
    ("DELETE FROM participation WHERE round = 2 AND institution = 'switzerland'", "round 2"),
    ("DELETE FROM audit WHERE round = 2", "audit entries"),
])
def test_audit_verify_catches_an_edited_row(tmp_path, statement, where):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={
        "rounds": 3, "output_dir": str(tmp_path), "compare": False})})
    run_id = run_simulation(cfg).output_dir.name
    assert main(["audit", "verify", run_id, "--store", str(tmp_path)]) == 0
    _tamper(tmp_path, statement)
    verdict = RunStore(tmp_path).verify(run_id)
    assert not verdict.ok and where in verdict.problem
    assert main(["audit", "verify", run_id, "--store", str(tmp_path)]) == 1


def test_an_unknown_run_or_a_bad_store_url_is_a_clear_error(tmp_path):
    from fedsilo.errors import ConfigError

    with pytest.raises(ConfigError, match="no run 'nope'"):
        RunStore(tmp_path).run("nope")
    with pytest.raises(ConfigError, match="cannot be opened"):
        RunStore("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_tensorboard_event_files_hold_the_round_scalars(tmp_path):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    cfg = cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"rounds": 2, "output_dir": str(tmp_path),
                                          "compare": False}),
        "logging": cfg.logging.model_copy(update={"tensorboard": True})})
    folder = run_simulation(cfg).output_dir
    files = list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert files
    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    raw = files[0].read_bytes()
    i = 0
    while i < len(raw):  # TFRecord: length, crc, data, crc
        n = int.from_bytes(raw[i:i + 8], "little")
        event = Event.FromString(raw[i + 12:i + 12 + n])
        tags.update(v.tag for v in event.summary.value)
        i += 12 + n + 4
    assert {"federated/accuracy", "accuracy/cleveland", "participants"} <= tags
