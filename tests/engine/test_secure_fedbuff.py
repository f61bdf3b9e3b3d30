"""FedBuff with secure aggregation (each buffer of K is a SecAgg+ group), in simulation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedsilo.config.schema import load_config, parse_config
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from tests.conftest import EXAMPLES, load_example

HEART = EXAMPLES / "heart_disease" / "heart_disease.toml"


def heart(**sections):
    cfg = load_config(HEART)
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=4, compare=False)
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if name != "strategy" else values
    return parse_config(raw, cfg.base_dir)


def test_one_secure_group_of_everyone_without_delays_is_synchronous_fedavg():
    sync = run_simulation(heart(), write=False)
    secure = run_simulation(heart(
        run={"mode": "async"}, strategy={"name": "fedbuff", "buffer_size": 4},
        aggregation={"secure": "secagg+", "threshold": 2, "neighbours": 3},
        clock={"seconds_per_example": 0.0}), write=False)
    for name, value in sync.history.params.items():  # fixed point: 2^-24 per weighted value
        np.testing.assert_allclose(secure.history.params[name], value, atol=1e-5, rtol=0)
    assert all(e.metrics["aggregator"]["secagg_dropouts"] == 0 for e in secure.history.events)
    assert all(len(e.participants) == 4 for e in secure.history.events)


def test_secure_groups_run_concurrently_and_a_slow_institution_holds_up_only_its_group():
    tables = load_example("robustness/attack_table.py").digits_tables(9)
    raw = {"run": {"seed": 1, "rounds": 12, "compare": False, "mode": "async",
                   "evaluate_every": 12},
           "data": {"task": "multiclass", "target": "digit", "test_fraction": 0.25,
                    "levels": {"digit": list(range(10))}},
           "model": {"kind": "logistic_regression"},
           "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
           "strategy": {"name": "fedbuff", "buffer_size": 3, "staleness": "polynomial"},
           "aggregation": {"secure": "secagg+", "threshold": 2, "neighbours": 2},
           "clock": {"seconds_per_example": 0.001, "speeds": {"inst-0": 0.2}}}
    from pathlib import Path

    result = run_simulation(parse_config(raw, Path(".")), write=False, tables=tables)
    events = result.history.events
    assert events[-1].version == 12
    applied = Counter(c for e in events for c in e.participants)
    assert applied["inst-0"] < max(applied.values())  # its group commits less often
    assert max(e.metrics["staleness"]["max"] for e in events) >= 1  # groups overlapped
    assert all(e.metrics["staleness"]["weight"] <= 1.0 for e in events)
    assert result.final["accuracy"] > 0.85


def test_secure_fedbuff_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="buffer_size \\(2\\) must exceed"):
        heart(run={"mode": "async"}, strategy={"name": "fedbuff", "buffer_size": 2},
              aggregation={"secure": "secagg+", "threshold": 2})
    with pytest.raises(ConfigError, match="fedasync with 'secagg\\+'"):
        heart(run={"mode": "async"}, strategy={"name": "fedasync"},
              aggregation={"secure": "secagg+", "threshold": 2})
