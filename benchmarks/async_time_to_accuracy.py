"""Time to target accuracy in simulated seconds, with one institution 5x slower than the rest:
synchronous FedAvg (every round waits for the slowest) vs FedAsync vs FedBuff, on heart
disease (4 hospitals, logistic regression) and digits (10 institutions, MLP).

The virtual clock: a task takes examples × 1 ms / speed plus an exponential network delay
(mean 50 ms); the slow institution has speed 0.2. Synchronous FedAvg is FedBuff with a buffer
of all institutions and a barrier (everyone waits for the commit), so the three share one
clock. Evaluation every commit (FedAsync: every 4 commits, one per update).

    .venv/bin/python benchmarks/async_time_to_accuracy.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsilo.config.schema import load_config, parse_config  # noqa: E402
from fedsilo.simulation.run import run_simulation  # noqa: E402

SECURE = {"secure": "secagg+", "threshold": 2, "neighbours": 2}


def heart(strategy: dict, clock: dict, rounds: int, secure: bool = False) -> Any:
    cfg = load_config(ROOT / "examples" / "heart_disease" / "heart_disease.toml")
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=rounds, compare=False, mode="async", evaluate_every=1)
    raw["strategy"], raw["clock"] = strategy, clock
    if secure:
        raw["aggregation"].update(SECURE)
    return parse_config(raw, cfg.base_dir), None


def digits(strategy: dict, clock: dict, rounds: int, secure: bool = False) -> Any:
    sys.path.insert(0, str(ROOT / "examples" / "robustness"))
    from attack_table import digits_tables  # the same IID split of sklearn's digits

    raw = {"run": {"seed": 1, "rounds": rounds, "compare": False, "mode": "async",
                   "evaluate_every": 1},
           "data": {"task": "multiclass", "target": "digit", "test_fraction": 0.25},
           "model": {"kind": "mlp", "hidden": [32]},
           "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
           "strategy": strategy, "clock": clock}
    if secure:
        raw["aggregation"] = dict(SECURE)
    return parse_config(raw, Path(".")), digits_tables(10)


def time_to(events: list, target: float) -> float | None:
    for e in events:
        if e.federated and e.federated["accuracy"] >= target:
            return float(e.metrics["clock"]["time"])
    return None


def main() -> None:
    logging.getLogger("fedsilo").setLevel(logging.ERROR)  # stale refusals are expected here
    cases = [("heart disease", heart, 4, "cleveland", 0.78, 15),
             ("digits", digits, 10, "inst-0", 0.93, 20)]
    print("| data | method | commits | simulated time to target | final accuracy | "
          "final simulated time | speed-up vs sync |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, make, n, slow, target, sync_rounds in cases:
        clock = {"seconds_per_example": 0.001, "speeds": {slow: 0.2},
                 "delay": "exponential", "delay_mean": 0.05}
        runs = [("sync FedAvg", {"name": "fedbuff", "buffer_size": n, "staleness": "constant"},
                 {**clock, "barrier": True}, sync_rounds),
                ("FedBuff K=2", {"name": "fedbuff", "buffer_size": 2}, clock,
                 sync_rounds * n // 2),
                ("FedAsync α=0.6", {"name": "fedasync", "mixing": 0.6}, clock,
                 sync_rounds * n),
                ("FedBuff K=3 + SecAgg+ (t=2)", {"name": "fedbuff", "buffer_size": 3}, clock,
                 sync_rounds * n // 3)]
        base = None
        for name, strategy, clk, rounds in runs:
            cfg, tables = make(strategy, clk, rounds, "SecAgg" in name)
            result = run_simulation(cfg, write=False, tables=tables)
            events = result.history.events
            reach = time_to(events, target)
            if base is None:
                base = reach
            speedup = f"{base / reach:.1f}x" if base and reach else "—"
            print(f"| {label} (target {target}) | {name} | {rounds} | "
                  f"{'not reached' if reach is None else f'{reach:.2f} s'} | "
                  f"{result.final['accuracy']:.3f} | {events[-1].metrics['clock']['time']:.2f} s"
                  f" | {speedup} |", flush=True)


if __name__ == "__main__":
    main()
