"""Goal 1 (../shared/PERFORMANCE.md): simulation of K institutions training a small MLP on
scikit-learn's digits for R rounds, fedsilo vs Flower's simulation engine, in the same run.

Each engine runs in a child process (fedsilo in the project's venv, Flower 1.42 in its own venv
`.venv-flower`); this parent samples the RSS of each child's whole process tree (Ray workers
included) every 50 ms and prints wall time, time per round, peak memory, final accuracy and the
ratios.

    python benchmarks/simulation_digits.py [--k 100] [--rounds 20] [--flower-python PATH]

Flower's venv: python3 -m venv .venv-flower &&
    .venv-flower/bin/pip install "flwr[simulation]==1.42.0" torch==2.13.0 scikit-learn
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

HERE = Path(__file__).resolve().parent


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
    print(f"{r['engine']:>8}: run {r['wall_s']:7.2f} s (process {r['process_s']:6.2f} s, "
          f"imports {r['import_s']:.2f} s) | first round {rounds[0]:.3f} s, then "
          f"{steady:.3f} s/round | peak RSS {r['peak_rss_mb']:7.0f} MB | "
          f"accuracy {r['accuracy']:.4f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--flower-python", default=str(HERE.parent / ".venv-flower/bin/python"))
    p.add_argument("--skip-flower", action="store_true")
    a = p.parse_args()
    print(f"digits, K={a.k} institutions, {a.rounds} rounds, MLP 64-32-10, FedAvg, "
          f"2 epochs, batch 8, SGD lr 0.1; evaluation on every institution every round")
    ours = measure([sys.executable, "_fedsilo_digits.py", str(a.k), str(a.rounds)])
    show(ours)
    if a.skip_flower or not Path(a.flower_python).exists():
        print(f"Flower skipped (--skip-flower, or no interpreter at {a.flower_python})")
        return
    theirs = measure([a.flower_python, "_flower_digits.py", str(a.k), str(a.rounds)])
    show(theirs)
    print(f"ratios (Flower / fedsilo): run wall time {theirs['wall_s'] / ours['wall_s']:.1f}x, "
          f"whole process {theirs['process_s'] / ours['process_s']:.1f}x, "
          f"peak memory {theirs['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x")


if __name__ == "__main__":
    main()
