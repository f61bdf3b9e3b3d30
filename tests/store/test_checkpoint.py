"""Checkpoints hold the whole server state, are written atomically, and a run continued
from one ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.algorithms.fedopt import fedadam
from fedsilo.algorithms.scaffold import scaffold
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.store.checkpoint import Checkpointer, load_checkpoint, save_checkpoint
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import federation

SIZES = ((30, 1), (90, 2), (15, 3), (50, 4))
CFG = {"epochs": None, "steps": 5, "batch_size": 8, "lr": 0.1}


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _run(strategy, rounds, start=None, on_commit=None):
    datas = [binary_data(n, s) for n, s in SIZES]
    transport, clients = federation(datas, strategy, kind="mlp", seed=2)
    initial = clients["c0"].trainer.initial_params()
    return train(strategy, transport, initial, RunSettings("r", 7, rounds=rounds),
                    start=start, on_commit=on_commit)


def test_server_adam_moments_and_scaffold_variates_survive_a_round_trip(tmp_path):
    for strategy in (fedadam(CFG, server_lr=0.05), scaffold(CFG)):
        state = _run(strategy, 2).state
        save_checkpoint(tmp_path, 2, state)
        back = load_checkpoint(tmp_path)
        assert back is not None and back.round == 2
        _assert_same(back.state.params, state.params)
        _assert_same(dict(back.state.optimizer_state.slots), dict(state.optimizer_state.slots))
        assert back.state.optimizer_state.count == state.optimizer_state.count
        assert back.state.version == state.version
        if state.work_state is not None:
            _assert_same(back.state.work_state, state.work_state)


def test_adaptive_clipping_state_survives_a_round_trip(tmp_path):
    from fedsilo.algorithms.base import ServerState
    from fedsilo.optim.base import OptState

    state = ServerState({"w": np.ones(3, np.float32)}, 4, OptState(4, {}),
                        {"norm": 0.37, "inner": {"releases": 4, "inner": None}})
    save_checkpoint(tmp_path, 4, state)
    assert load_checkpoint(tmp_path).state.aggregator_state == state.aggregator_state


def test_a_checkpoint_is_replaced_atomically(tmp_path):
    state = _run(fedadam(CFG), 1).state
    save_checkpoint(tmp_path, 1, state)
    first = (tmp_path / "checkpoint.npz").stat().st_ino
    save_checkpoint(tmp_path, 2, state)
    assert (tmp_path / "checkpoint.npz").stat().st_ino != first  # renamed over, not rewritten
    assert not list(tmp_path.glob(".*tmp"))
    assert load_checkpoint(tmp_path).round == 2
    assert load_checkpoint(tmp_path / "nothing") is None


@pytest.mark.parametrize("make", [lambda: fedadam(CFG, server_lr=0.05), lambda: scaffold(CFG)],
                         ids=["fedadam", "scaffold"])
def test_continuing_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, make):
    whole = _run(make(), 6)
    saver = Checkpointer(tmp_path, every=2, last=6)
    _run(make(), 3, on_commit=saver)  # "crashes" after round 3: last checkpoint is round 2
    saved = load_checkpoint(tmp_path)
    assert saved is not None and saved.round == 2
    # the institutions keep their own state (SCAFFOLD's c_i) in their processes; here a
    # fresh federation replays rounds 1-2 of it so the clients are where they were
    strategy = make()
    datas = [binary_data(n, s) for n, s in SIZES]
    transport, clients = federation(datas, strategy, kind="mlp", seed=2)
    initial = clients["c0"].trainer.initial_params()
    train(strategy, transport, initial, RunSettings("r", 7, rounds=2))
    resumed = train(strategy, transport, initial, RunSettings("r", 7, rounds=6),
                       start=(saved.round, saved.state))
    assert [e.round for e in resumed.events] == [3, 4, 5, 6]
    for name in whole.params:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])


# --resume of a damaged or missing checkpoint: exit 2, nothing deleted ------------------------
@pytest.fixture
def crashed(tmp_path):
    """A 3-round run recorded with its checkpoints, then marked unfinished (as a crash
    leaves it); the server kit and config that `fedsilo server --resume` would use."""
    from sqlalchemy import text

    from fedsilo.config.schema import load_config
    from fedsilo.simulation.run import run_simulation
    from fedsilo.store.run_store import RunStore
    from fedsilo.transport.grpc.provision import Project, provision
    from tests.integration.helpers import FILES, heart_config

    provision(Project("heart", "localhost", tuple(FILES)), tmp_path / "kits")
    config = heart_config(tmp_path, rounds=3, compare=False, checkpoint_every=1)
    cfg = load_config(config)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={
        "output_dir": str(tmp_path / "results")})})
    folder = run_simulation(cfg).output_dir
    store = RunStore(tmp_path / "results")
    with store.engine.begin() as db:
        db.execute(text("UPDATE runs SET status = 'running'"))
    args = ["server", "--kit", str(tmp_path / "kits" / "server"), "--config", str(config),
            "--address", "127.0.0.1:0", "--output", str(tmp_path / "results"), "--resume",
            "--wait", "0"]
    return folder, store, args


def _untouched(store, folder):
    data = store.run(folder.name)
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3] and data["status"] == "running"
    assert [e["kind"] for e in data["events"]] == ["start", "finished"]  # no "resume"
    assert store.verify(folder.name).ok


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip", None],
                         ids=["empty", "garbage", "truncated"])
def test_resume_from_a_damaged_checkpoint_is_exit_2_and_keeps_the_rounds(crashed, damage,
                                                                          capsys, monkeypatch):
    from tests.store.helpers import cli

    folder, store, args = crashed
    path = folder / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:200] if damage is None else damage)
    code, out = cli(capsys, monkeypatch, *args)  # --wait 0: it stops before waiting
    assert code == 2, out
    assert f"checkpoint {path} cannot be read" in out
    assert "Restore it from a backup, or start the run again without --resume" in out
    assert "pickle" not in out and "Traceback" not in out
    _untouched(store, folder)


def test_resume_without_a_checkpoint_is_exit_2_and_keeps_the_rounds(crashed, capsys,
                                                                   monkeypatch):
    from tests.store.helpers import cli

    folder, store, args = crashed
    (folder / "checkpoint.npz").unlink()
    code, out = cli(capsys, monkeypatch, *args)
    assert code == 2, out
    assert f"--resume: no checkpoint at {folder / 'checkpoint.npz'} for run {folder.name}" in out
    assert "start the run again without --resume" in out
    _untouched(store, folder)


def test_a_checkpoint_of_another_kind_is_refused_by_name(tmp_path):
    from fedsilo.errors import ConfigError

    np.savez(tmp_path / "checkpoint.npz", __meta__=np.frombuffer(
        b'{"round": 2, "state": {"__dataclass__": "Popen", "fields": {}}}', dtype=np.uint8))
    with pytest.raises(ConfigError, match="cannot be read \\(KeyError\\)"):
        load_checkpoint(tmp_path)


def test_resume_drops_only_the_rounds_after_its_checkpoint_and_records_the_rest(tmp_path):
    """A run recorded 3 rounds but its checkpoint holds round 2 (it crashed between the two
    writes): --resume drops round 3, runs rounds 3-4 again, and the chain verifies."""
    import shutil

    from sqlalchemy import text

    from fedsilo.aggregation.secure.identity import SimulatedCA
    from fedsilo.client.institution import Institution
    from fedsilo.config.build import build_schema
    from fedsilo.session import run_session
    from fedsilo.simulation.institutions import load_tables
    from fedsilo.simulation.run import run_simulation
    from fedsilo.store.recorder import unfinished_run
    from fedsilo.store.run_store import RunStore
    from fedsilo.transport.inprocess import InProcessTransport
    from tests.store.helpers import at_rounds, heart

    saved = tmp_path / "round-2.npz"
    keep = {3: lambda: shutil.copy(next(tmp_path.glob("*/checkpoint.npz")), saved)}
    folder = run_simulation(heart(tmp_path, rounds=3), phase=at_rounds(keep)).output_dir
    shutil.copy(saved, folder / "checkpoint.npz")
    store = RunStore(tmp_path)
    with store.engine.begin() as db:
        db.execute(text("UPDATE runs SET status = 'running'"))

    cfg = heart(tmp_path, rounds=4)
    recorder = unfinished_run(cfg)
    assert recorder.run_id == folder.name and recorder.resume_point().round == 2
    tables = load_tables(cfg)
    ca = SimulatedCA()  # the restarted institutions sign their updates, as the first ones did
    institutions = {n: Institution(n, t, keys=ca.keys(n)) for n, t in sorted(tables.items())}
    session = run_session(cfg, InProcessTransport(dict(institutions)),
                          build_schema(cfg, next(iter(tables.values()))), recorder.run_id,
                          recorder=recorder, resume=True)
    recorder.finish()
    assert [e.round for e in session.history.events] == [3, 4]
    data = store.run(folder.name)
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3, 4]
    assert [e["kind"] for e in data["events"]] == ["start", "finished", "resume", "finished"]
    assert store.verify(folder.name).ok and load_checkpoint(folder).round == 4
