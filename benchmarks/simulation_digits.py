"""Goal 1 (../shared/PERFORMANCE.md): simulation of K institutions training a small MLP on
scikit-learn's digits for R rounds, fedsilo vs Flower's simulation engine and NVIDIA FLARE's
simulator, in the same run.

Two workloads (`--workload`, benchmarks/digits_task.py), the same for every engine in a run
(model, data, partitions, epochs, batch, lr, all K institutions training every round, the
evaluation schedule):

- federated (default, the README's figure): 2 local epochs of batch 8; every round, every one
  of the K institutions evaluates the global model on its test split;
- central: 1 local epoch of batch 16; every round the server evaluates the global model on
  the pooled test splits (fedsilo also makes its one federated evaluation after the last
  round, which Flower and NVFlare do not: that costs fedsilo, not them).

Flower runs as its docs recommend for CPU simulation: `run_simulation` with the Ray backend,
one CPU per client (`client_resources`), so as many clients at once as there are cores.
NVFlare 2.9 runs its Job Recipe API (`FedAvgRecipe`, Client API) in `SimEnv` with its default
settings: K sites, K threads (one worker process per site), the Client API in process
(benchmarks/_nvflare_digits.py says more).

Each engine runs in a child process (fedsilo in the project's venv, Flower 1.42 in its own venv
`.venv-flower`, NVFlare 2.9.0 in `.venv-nvflare`); this parent samples the RSS of each child's
whole process tree (Ray workers, NVFlare's site processes included) every 50 ms and prints wall
time, time per round, peak memory, final accuracy and the ratios.

    python benchmarks/simulation_digits.py [--k 100] [--rounds 20] [--workload federated]
        [--flower-python PATH] [--skip-flower] [--nvflare-python PATH] [--skip-nvflare]
        [--json out.json]

The peers' venvs: bash benchmarks/setup-peers.sh
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_task import LR, WORKLOADS  # noqa: E402

HERE = Path(__file__).resolve().parent
# NVFlare's SimEnv runs one worker process per site (torch + nvflare imported in each): about
# 0.5 GB each here (K=10: 5.2 GB peak, K=20: see docs/benchmarks.md)
NVFLARE_GB_PER_SITE = 0.5


def available_gb() -> float:
    """MemAvailable from /proc/meminfo, in GB (inf where there is none)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return float("inf")
    kb = next((int(ln.split()[1]) for ln in lines if ln.startswith("MemAvailable")), None)
    return float("inf") if kb is None else kb * 1024 / 1e9


def tree_rss(root: int) -> int:
    """Bytes of resident memory of `root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            pid = int(entry)
            children.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(HERE),
                                            "RAY_DEDUP_LOGS": "0"})
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[1]} failed ({proc.returncode}):\n{err[-3000:]}")
    line = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    result["process_s"] = time.perf_counter() - start
    result["peak_rss_mb"] = peak[0] / 2**20
    return result


def show(r: dict) -> None:
    rounds = r["round_s"]
    steady = sum(rounds[1:]) / max(len(rounds) - 1, 1)
    r["first_round_s"], r["steady_round_s"] = rounds[0], steady
    print(f"{r['engine']:>8}: run {r['wall_s']:7.2f} s (process {r['process_s']:6.2f} s, "
          f"imports {r['import_s']:.2f} s) | first round {rounds[0]:.3f} s, then "
          f"{steady:.3f} s/round | peak RSS {r['peak_rss_mb']:7.0f} MB | "
          f"accuracy {r['accuracy']:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="federated",
                   help="federated: 2 epochs of batch 8, evaluation on every institution "
                        "every round; central: 1 epoch of batch 16, server evaluation")
    p.add_argument("--flower-python", default=str(HERE.parent / ".venv-flower/bin/python"))
    p.add_argument("--skip-flower", action="store_true")
    p.add_argument("--nvflare-python", default=str(HERE.parent / ".venv-nvflare/bin/python"))
    p.add_argument("--skip-nvflare", action="store_true")
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    epochs, batch, where = WORKLOADS[a.workload]
    print(f"workload '{a.workload}': digits, K={a.k} institutions, all training every round, "
          f"{a.rounds} rounds, MLP 64-32-10, FedAvg, {epochs} epoch(s) of batch {batch}, SGD lr "
          f"{LR}; evaluation every round on {where}")
    workload = {"workload": a.workload, "k": a.k, "rounds": a.rounds, "epochs": epochs,
                "batch": batch, "evaluation": where}
    runs = [measure([sys.executable, "_fedsilo_digits.py", str(a.k), str(a.rounds),
                     a.workload])]
    show(runs[0])
    skipped = []
    peers = [("flower", "Flower", a.flower_python, a.skip_flower, "_flower_digits.py"),
             ("nvflare", "NVFlare", a.nvflare_python, a.skip_nvflare, "_nvflare_digits.py")]
    for system, label, python, skip, script in peers:
        if skip or not Path(python).exists():
            why = f"--skip-{system}" if skip else f"no interpreter at {python}"
            skipped.append(f"{system}: {why} (bash benchmarks/setup-peers.sh makes it)")
            print(f"{label} skipped ({why})")
            continue
        need, free = a.k * NVFLARE_GB_PER_SITE, available_gb()
        if system == "nvflare" and need > free:
            why = (f"K={a.k}: its simulator's recommended setting (one process per site) needs "
                   f"~{need:.0f} GB, {free:.0f} GB available; fewer threads start a process "
                   "per site task (K=10, 2 threads: ~70 s a round)")
            skipped.append(f"nvflare: {why}")
            print(f"{label} skipped ({why})")
            continue
        runs.append(measure([python, script, str(a.k), str(a.rounds), a.workload]))
        ours, theirs = runs[0], runs[-1]
        show(theirs)
        print(f"ratios ({label} / fedsilo): run wall time "
              f"{theirs['wall_s'] / ours['wall_s']:.1f}x, whole process "
              f"{theirs['process_s'] / ours['process_s']:.1f}x, peak memory "
              f"{theirs['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x")
    if a.json:
        records: list[dict[str, Any]] = [
            {"system": r["engine"], **workload,
             **{key: r[key] for key in ("wall_s", "process_s", "import_s", "first_round_s",
                                        "steady_round_s", "peak_rss_mb", "accuracy")}}
            for r in runs]
        a.json.write_text(json.dumps({"records": records, "skipped": skipped}, indent=1))


if __name__ == "__main__":
    main()
