"""Checkpoints hold the whole server state, are written atomically, and a run continued
from one ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.algorithms.fedopt import fedadam
from fedsilo.algorithms.scaffold import scaffold
from fedsilo.engine.sync_runner import RunSettings, run_sync
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
    return run_sync(strategy, transport, initial, RunSettings("r", 7, rounds=rounds),
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
    run_sync(strategy, transport, initial, RunSettings("r", 7, rounds=2))
    resumed = run_sync(strategy, transport, initial, RunSettings("r", 7, rounds=6),
                       start=(saved.round, saved.state))
    assert [e.round for e in resumed.events] == [3, 4, 5, 6]
    for name in whole.params:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])
