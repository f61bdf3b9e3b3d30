"""Issue 18: fedsilo in process, fedsilo on Ray and Flower's Ray-based simulation as K grows.

The same workload for the three (_scaling_data.py): K synthetic institutions of 40 rows (64
features, 10 classes; each made from its name where it is trained, the same rows and the same
30/10 train/test split on each side), an MLP 64-256-256-10 (85,002 parameters, the same
initial weights), FedAvg over all K every round, 1 local epoch of batch 16, SGD lr 0.05, and
one federated evaluation (every institution on its test rows) after the last round only.

- fedsilo, fedsilo-ray: `run_simulation` from a RunConfig (_ray_scaling_run.py), backend
  "inprocess" or "ray" (one actor per CPU unless --actors);
- flower: Flower 1.42's `run_simulation` on its Ray backend in its own venv
  (_flower_scaling.py; `--flower-cpus` per client, default 1: one client per CPU, as fedsilo's
  actors; Flower's own default is 2);

each as a child process. This parent samples the RSS of the child's whole process tree every
50 ms (Ray's GCS, raylet and workers are its descendants; the object store's shared pages count
in every process that maps them, so a Ray figure is an upper bound) and reports wall time
(the run, preparation included, imports excluded), the first round's seconds, the mean seconds
of a round after the first (a round: from sending the fit tasks to the aggregate, evaluation
excluded), the tree's peak RSS and the server process's own (`ru_maxrss`).

    python benchmarks/ray_scaling.py [--k 100 1000] [--rounds 3]
        [--systems fedsilo fedsilo-ray flower] [--flower-k 100 1000] [--actors 0]
        [--flower-cpus 1] [--json out.json]

K is at most fedsilo.limits.MAX_INSTITUTIONS (10,000), the institutions a config may declare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulation_digits import measure  # noqa: E402

HERE = Path(__file__).resolve().parent
SYSTEMS = ("fedsilo", "fedsilo-ray", "flower")
COLUMNS = ("system", "k", "params", "rounds", "wall_s", "first_round_s", "round_s",
           "peak_rss_mb", "server_peak_mb", "accuracy")


def command(system: str, k: int, a: argparse.Namespace) -> list[str]:
    """The child process that runs `system` with K institutions."""
    if system == "flower":
        return [a.flower_python, "_flower_scaling.py", str(k), str(a.rounds),
                str(a.flower_cpus), a.hidden]
    backend = "ray" if system == "fedsilo-ray" else "inprocess"
    return [sys.executable, "_ray_scaling_run.py", str(k), str(a.rounds), backend,
            str(a.actors), a.hidden]


def record(system: str, k: int, rounds: int, r: dict[str, Any]) -> dict[str, Any]:
    """One flat record of a child's result."""
    per_round = r["round_s"]
    later = per_round[1:] or per_round
    return {"system": system, "k": k, "params": r["params"], "rounds": rounds,
            "wall_s": r["wall_s"], "first_round_s": per_round[0],
            "round_s": sum(later) / len(later), "peak_rss_mb": r["peak_rss_mb"],
            "server_peak_mb": r["server_peak_mb"], "accuracy": r["accuracy"], "sweep": "K"}


def row(r: dict[str, Any]) -> str:
    return ("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                              for c in COLUMNS) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument("--flower-k", type=int, nargs="+",
                   help="the K Flower runs at (default: every --k)")
    p.add_argument("--actors", type=int, default=0, help="Ray actors (0: one per CPU)")
    p.add_argument("--flower-cpus", type=float, default=1.0, help="Flower: CPUs per client")
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--flower-python", default=str(HERE.parent / ".venv-flower/bin/python"))
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    print(f"synthetic, MLP 64-{a.hidden.replace(',', '-')}-10, FedAvg, {a.rounds} rounds, "
          f"fedsilo's Ray actors: {a.actors or 'one per CPU'}, Flower: {a.flower_cpus:g} "
          f"CPU(s) per client")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    systems = [s for s in SYSTEMS if s in a.systems]
    if "flower" in systems and not Path(a.flower_python).exists():
        systems.remove("flower")
        skipped.append(f"flower: no interpreter at {a.flower_python} (Flower's venv, "
                       "see simulation_digits.py)")
    for k in a.k:
        for system in systems:
            if system == "flower" and a.flower_k is not None and k not in a.flower_k:
                skipped.append(f"flower at K={k}: not in --flower-k")
                continue
            records.append(record(system, k, a.rounds, measure(command(system, k, a))))
            print(row(records[-1]), flush=True)
    for line in skipped:
        print("skipped:", line)
    if a.json:
        a.json.write_text(json.dumps({"records": records, "skipped": skipped}, indent=1))


if __name__ == "__main__":
    main()
