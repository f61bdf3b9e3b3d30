"""A run with a fixed seed gives the same numbers twice; another seed gives others."""

import numpy as np

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from tests.conftest import EXAMPLES


def run(seed):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease_mlp.toml")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={
        "rounds": 3, "seed": seed, "compare": False})})
    return run_simulation(cfg, write=False)


def test_same_seed_same_bits():
    a, b = run(11), run(11)
    for name in a.history.params:
        assert np.array_equal(a.history.params[name], b.history.params[name])
    assert [e.federated for e in a.history.events] == [e.federated for e in b.history.events]


def test_other_seed_other_numbers():
    a, b = run(11), run(12)
    assert any(not np.array_equal(a.history.params[n], b.history.params[n])
               for n in a.history.params)
