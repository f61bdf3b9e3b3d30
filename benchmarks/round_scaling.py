"""How a plain round scales: seconds per round against the number of institutions K and the
model size N, and peak memory against K, fedsilo and Flower 1.42's simulation in the same run.

Workload, the same for both: K institutions, a model of N float32, FedAvg over all K every
round, no evaluation; each institution returns the model plus a fixed step drawn once before
any round. fedsilo runs in process (benchmarks/_fedsilo_round.py, institutions one after
another); Flower runs `run_simulation` with the Ray backend, one CPU per client as its docs
recommend (benchmarks/_flower_secagg.py with SecAgg+ off), so its clients run in parallel
over the machine's cores. Each point is its own child process; the parent samples the RSS of
the child's whole process tree (Ray's workers included) every 50 ms. Round time: the median
of rounds 2..R-1 (round 1 starts Flower's actors; fedsilo's last round also evaluates).

    python benchmarks/round_scaling.py [--k 10 100 1000] [--n 10000 ... 100000000]
        [--k-at-n 100000] [--n-at-k 10] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from simulation_digits import measure  # noqa: E402


def point(system: str, python: str, k: int, n: int, rounds: int) -> dict[str, Any]:
    """One (system, K, N) run in a child process: round time and peak memory, or the error."""
    if system == "fedsilo":
        cmd = [python, "_fedsilo_round.py", str(k), str(n), str(rounds)]
    else:
        cmd = [python, "_flower_secagg.py", str(k), str(n), str(rounds), "0"]
    row: dict[str, Any] = {"system": system, "k": k, "n": n, "rounds": rounds}
    try:
        r = measure(cmd)
    except SystemExit as e:  # measure() exits with the child's stderr on failure
        return {**row, "error": str(e).splitlines()[0]}
    rounds_s = r["rounds_s"]
    steady = rounds_s[1:-1] if system == "fedsilo" else rounds_s[1:]
    return {**row, "round_s": statistics.median(steady or rounds_s),
            "first_round_s": rounds_s[0], "process_s": r["process_s"],
            "peak_rss_mb": r["peak_rss_mb"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[10, 30, 100, 300, 1000],
                   help="institution counts for the K sweep")
    p.add_argument("--k-at-n", type=int, default=100_000, help="model size of the K sweep")
    p.add_argument("--n", type=int, nargs="+",
                   default=[10_000, 100_000, 1_000_000, 10_000_000, 100_000_000],
                   help="model sizes for the N sweep")
    p.add_argument("--n-at-k", type=int, default=10, help="institutions in the N sweep")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--flower-python", default=str(HERE.parent / ".venv-flower/bin/python"))
    p.add_argument("--skip-flower", action="store_true")
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    rounds = max(a.rounds, 3)
    systems = [("fedsilo", sys.executable)]
    skipped = []
    if a.skip_flower or not Path(a.flower_python).exists():
        skipped.append(f"flower: --skip-flower, or no interpreter at {a.flower_python}")
    else:
        systems.append(("flower", a.flower_python))
    points = [("K", k, a.k_at_n) for k in a.k] + [("N", a.n_at_k, n) for n in a.n]
    print(f"plain FedAvg round, fixed precomputed update, no evaluation; median of rounds "
          f"2..R-1 of {rounds}; K sweep at N={a.k_at_n:,}, N sweep at K={a.n_at_k}")
    records = []
    for sweep, k, n in points:
        for system, python in systems:
            row = {"sweep": sweep, **point(system, python, k, n, rounds)}
            records.append(row)
            if "error" in row:
                print(f"  {sweep} sweep K={k:>5} N={n:>11,} {system:>8}: failed: "
                      f"{row['error']}", flush=True)
            else:
                print(f"  {sweep} sweep K={k:>5} N={n:>11,} {system:>8}: round "
                      f"{row['round_s']:8.3f} s | first {row['first_round_s']:7.3f} s | peak "
                      f"RSS {row['peak_rss_mb']:7.0f} MB | process {row['process_s']:6.1f} s",
                      flush=True)
    for line in skipped:
        print("skipped", line)
    if a.json:
        a.json.write_text(json.dumps({"records": records, "skipped": skipped}, indent=1))


if __name__ == "__main__":
    main()
