"""The FedProx paper's headline result on its own data: on Synthetic(1, 1) with 90% stragglers,
FedProx (partial work, μ = 1) beats FedAvg (which drops the stragglers)."""

import numpy as np

from fedsilo.data.synthetic import fedprox_synthetic
from fedsilo.simulation.run import run_simulation
from tests.conftest import load_example


def test_synthetic_data_follows_the_recipe():
    tables = fedprox_synthetic(1.0, 1.0, seed=0)
    assert len(tables) == 30
    sizes = [len(t) for t in tables.values()]
    assert min(sizes) >= 50 and max(sizes) > 5 * np.median(sizes)  # power law
    t = next(iter(tables.values()))
    assert list(t.columns) == [f"x{j}" for j in range(60)] + ["y"]
    assert set(np.unique(np.concatenate([t["y"] for t in tables.values()]))) <= set(range(10))
    # β = 1: devices' feature means differ; α = β = 0 makes them share one distribution
    means = [t.iloc[:, :60].to_numpy().mean() for t in tables.values()]
    calm = [t.iloc[:, :60].to_numpy().mean() for t in fedprox_synthetic(0, 0, seed=0).values()]
    assert np.std(means) > 2 * np.std(calm)


def test_fedprox_beats_fedavg_with_90_percent_stragglers():
    config = load_example("synthetic/fedprox_table.py").config
    tables = fedprox_synthetic(1.0, 1.0, seed=0)
    avg = run_simulation(config("fedavg", "drop", None, 0.9, rounds=20), write=False,
                         tables=tables).final["accuracy"]
    prox = run_simulation(config("fedprox", "partial", 1.0, 0.9, rounds=20), write=False,
                          tables=tables).final["accuracy"]
    assert prox > avg + 0.1, (prox, avg)
