"""benchmarks/ray_scaling.py's pieces (no run, no timing): Flower's side makes the rows and the
train/test split fedsilo makes, and run_all plots the three systems' round time against K."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fedsilo.config.build import build_schema
from fedsilo.config.schema import RunConfig
from fedsilo.data.prepare import split_institutions

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _scaling_data as data  # noqa: E402
import run_all  # noqa: E402


def test_flower_side_rows_and_split_are_fedsilos() -> None:
    names = [data.name(i) for i in range(30)]
    tables = {n: data.load(n, {"rows": data.ROWS}) for n in names}
    cfg = RunConfig.model_validate({
        "data": {"task": "multiclass", "target": "y", "loader": "_scaling_data:load",
                 "test_fraction": data.TEST_FRACTION,
                 "institutions": [{"name": n} for n in names]},
        "model": {"kind": "mlp"}})
    schema = build_schema(cfg, tables[names[0]])
    for split in split_institutions(tables, schema, data.TEST_FRACTION, cfg.run.seed):
        x, y = data.rows(split.name)
        train, test = data.split(split.name, y)
        features = [f"x{j}" for j in range(data.FEATURES)]
        assert np.array_equal(split.train[features].to_numpy(), x[train])
        assert np.array_equal(split.test[features].to_numpy(), x[test])
        assert np.array_equal(split.test["y"].to_numpy(), y[test])


def test_run_all_plots_round_time_against_k_for_the_three_systems(tmp_path: Path) -> None:
    records = [{"system": s, "k": k, "params": 85_002, "round_s": 0.01 * k * f, "sweep": "K"}
               for s, f in (("fedsilo", 1), ("fedsilo-ray", 1.2), ("flower", 8))
               for k in (100, 1000)]
    made = run_all.plot({"ray_scaling": records}, tmp_path / "2026-01-01")
    assert [p.name for p in made] == ["2026-01-01-ray-round-time-vs-k.png"]
    assert made[0].stat().st_size > 0
