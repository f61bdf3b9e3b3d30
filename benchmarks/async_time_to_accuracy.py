"""Goal 5 (../shared/PERFORMANCE.md): time to target accuracy in simulated seconds, with one
institution 5x slower than the rest: synchronous FedAvg (every round waits for the slowest) vs
FedBuff vs FedAsync vs secure FedBuff, on heart disease (4 hospitals, logistic regression) and
digits (10 institutions, MLP).

The virtual clock: a task takes examples × 1 ms / speed plus an exponential network delay
(mean 50 ms); the slow institution has speed 0.2. Synchronous FedAvg is FedBuff with a buffer
of all institutions and a barrier (everyone waits for the commit), so all variants share one
clock and the same number of client updates.

Every variant is judged at the same simulated-time interval (`--interval`): the global model
is evaluated (federated, on every institution's test split) after every commit, and at each
tick t = interval, 2·interval, ... the accuracy is that of the model in force at t (the last
commit at or before t): exactly what evaluating every variant every `interval` seconds would
give, as evaluation is deterministic. The target counts as reached at the first tick of three
consecutive ticks at or above it. Each variant runs with every seed of `--seeds`; the table
gives the median and the range (min–max) over seeds.

    .venv/bin/python benchmarks/async_time_to_accuracy.py [--seeds 0 1 2 3 4]
        [--data heart digits] [--interval 0.25] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsilo.config.schema import load_config, parse_config  # noqa: E402
from fedsilo.simulation.run import run_simulation  # noqa: E402

SECURE = {"secure": "secagg+", "threshold": 2, "neighbours": 2}
HOLD = 3  # consecutive ticks at or above the target


def heart(strategy: dict, clock: dict, rounds: int, seed: int, secure: bool = False) -> Any:
    cfg = load_config(ROOT / "examples" / "heart_disease" / "heart_disease.toml")
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=rounds, compare=False, mode="async", evaluate_every=1, seed=seed)
    raw["strategy"], raw["clock"] = strategy, clock
    if secure:
        raw["aggregation"].update(SECURE)
    return parse_config(raw, cfg.base_dir), None


def digits(strategy: dict, clock: dict, rounds: int, seed: int, secure: bool = False) -> Any:
    sys.path.insert(0, str(ROOT / "examples" / "robustness"))
    from attack_table import digits_tables  # the same IID split of sklearn's digits

    raw = {"run": {"seed": seed, "rounds": rounds, "compare": False, "mode": "async",
                   "evaluate_every": 1},
           "data": {"task": "multiclass", "target": "digit", "test_fraction": 0.25},
           "model": {"kind": "mlp", "hidden": [32]},
           "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
           "strategy": strategy, "clock": clock}
    if secure:  # the target's levels are declared, so the secure sum can count them
        raw["aggregation"] = dict(SECURE)
        raw["data"]["levels"] = {"digit": list(range(10))}
    return parse_config(raw, Path(".")), digits_tables(10)


def ticks(events: list, interval: float) -> list[tuple[float, float]]:
    """(t, accuracy of the model in force at t) for t = interval, 2·interval, ... up to the
    last commit; before the first evaluated commit nothing is in force."""
    evaluated = [(float(e.metrics["clock"]["time"]), float(e.federated["accuracy"]))
                 for e in events if e.federated]
    if not evaluated:
        return []
    out, i, current = [], 0, None
    for n in range(1, int(evaluated[-1][0] / interval) + 1):
        t = n * interval
        while i < len(evaluated) and evaluated[i][0] <= t:
            current = evaluated[i][1]
            i += 1
        if current is not None:
            out.append((t, current))
    return out


def time_to(samples: list[tuple[float, float]], target: float) -> float | None:
    """The first tick of HOLD consecutive ticks at or above `target` (None: never)."""
    streak = 0
    for i, (_, accuracy) in enumerate(samples):
        streak = streak + 1 if accuracy >= target else 0
        if streak == HOLD:
            return samples[i - HOLD + 1][0]
    return None


def spread(values: list[float]) -> str:
    """'median (min–max)' of finite values, 'not reached' when none is."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "not reached"
    missing = len(values) - len(finite)
    text = f"{statistics.median(values):.2f} ({min(finite):.2f}–{max(finite):.2f})"
    return text + (f", {missing} not reached" if missing else "")


CASES = {"heart": ("heart disease", heart, 4, "cleveland", 0.78, 15),
         "digits": ("digits", digits, 10, "inst-0", 0.93, 20)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--data", nargs="+", choices=sorted(CASES), default=["heart", "digits"])
    p.add_argument("--interval", type=float, default=0.25,
                   help="simulated seconds between evaluations, the same for every variant")
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    logging.getLogger("fedsilo").setLevel(logging.ERROR)  # stale refusals are expected here
    print(f"seeds {a.seeds}; every variant evaluated every {a.interval} simulated s; target "
          f"reached = first of {HOLD} consecutive evaluations at or above it; median (min–max)")
    print("| data | method | commits | simulated time to target, s | final accuracy | "
          "speed-up vs sync (median of seeds) |")
    print("|---|---|---:|---:|---:|---:|")
    records: list[dict[str, Any]] = []
    for key in a.data:
        label, make, n, slow, target, sync_rounds = CASES[key]
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
        base: dict[int, float] = {}
        for name, strategy, clk, rounds in runs:
            reach, final, speedups = [], [], []
            for seed in a.seeds:
                cfg, tables = make(strategy, clk, rounds, seed, "SecAgg" in name)
                result = run_simulation(cfg, write=False, tables=tables)
                samples = ticks(result.history.events, a.interval)
                t = time_to(samples, target)
                reached = math.inf if t is None else t
                base.setdefault(seed, reached)
                reach.append(reached)
                final.append(float(result.final["accuracy"]))
                both = math.isfinite(reached) and math.isfinite(base[seed])
                speedups.append(base[seed] / reached if both else math.nan)
                records.append({"data": label, "target": target, "method": name,
                                "commits": rounds, "seed": seed, "interval_s": a.interval,
                                "hold": HOLD, "time_to_target_s": t,
                                "final_accuracy": final[-1],
                                "final_time_s": float(
                                    result.history.events[-1].metrics["clock"]["time"]),
                                "speedup_vs_sync": None if math.isnan(speedups[-1])
                                else speedups[-1]})
            known = [s for s in speedups if not math.isnan(s)]
            gain = (f"{statistics.median(known):.1f}x ({min(known):.1f}–{max(known):.1f})"
                    if known else "—")
            print(f"| {label} (target {target}) | {name} | {rounds} | {spread(reach)} | "
                  f"{statistics.median(final):.3f} ({min(final):.3f}–{max(final):.3f}) | "
                  f"{gain} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"records": records}, indent=1))


if __name__ == "__main__":
    main()
