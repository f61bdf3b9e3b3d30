"""Goal 4 (../shared/PERFORMANCE.md): one round with SecAgg+ against the plain round, for K
institutions and N parameters, and the bytes each institution sends.

Both rounds run the real round loop in one process (in-process transport), so the figures are
the protocol's compute: key agreement, Shamir shares, AES-GCM, AES-CTR masks, unmasking.
Institutions do not train: each returns the model plus a fixed step drawn once, before any
timed round (so no round pays for random numbers). SecAgg+ uses Flower's benchmark setting:
3 neighbours ("shares"), threshold 2.

Every institution's handling of every task is timed, so each round splits into client work
and the server's work (the round's time minus all client work). Two figures per round:

- serial: the round as run here, all K institutions' work one after another in one process;
- deployment-equivalent: what a deployment with one machine per institution would wait for,
  the server's work plus, for each stage of the round, the slowest institution's work in it
  (network time excluded: deployment_round.py measures that). Also with each institution's
  work as the CPU time it used (`*_cpu_*`): on a shared machine a stage's slowest wall time
  is often an institution that another process preempted, which its own machine would not,
  and SecAgg+'s four stages catch four such maxima where the plain round's one catches one.

Goals (issue 19), at K = 100, N = 1e6, 64-bit ring: deployment-equivalent latency <= 2x the
plain round's, and the server's own work <= 3x the plain round's server work (the plain sum).
Each figure is the median over the run's rounds, then over --repeats runs (plain and SecAgg+
runs interleaved). BLAS is held to --blas-threads threads (default 1) in both: the plain sum
adds with BLAS axpy, whose worker threads, woken for each update, made the plain server's
work 4-15x slower on the shared 2-core machine (a slower plain round flatters SecAgg+).

With `.venv-flower` present, Flower 1.42's simulation runs the same workload plain and with
its SecAgg+ (SecAggPlusWorkflow + secaggplus_mod, 3 shares, threshold 2) in the same run, for
the K values in --flower-k (its per-round time excludes the engine's start-up; Flower's
clients run in parallel over the machine's cores, so it is not a serial figure).

    python benchmarks/secure_aggregation.py [--k 10 100] [--n 100000 1000000] [--rounds 5]
        [--repeats 3] [--ring 64] [--blas-threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fedsilo.aggregation.build import build_aggregator
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.client.client import Client
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.transport.inprocess import InProcessTransport

PLAIN = {"layer": "mean", "weighted": True}
SECURE = {**PLAIN, "secure": {"protocol": "secagg+", "threshold": 2, "neighbours": 3}}
# a 32-bit ring: |weighted value| <= 128 (the weight 100 included) at 2^-16, K <= 163
SECURE32 = {**PLAIN, "secure": {**SECURE["secure"], "ring_bits": 32, "frac_bits": 16,
                                "max_abs": 128.0}}
HERE = Path(__file__).resolve().parent
GOALS = {"deployment_vs_plain": 2.0, "server_vs_plain": 3.0}  # at K = 100, N = 1e6, 64 bits
FIGURES = ("serial_round_s", "deployment_round_s", "server_s", "slowest_institution_s",
           "deployment_round_cpu_s", "slowest_institution_cpu_s", "sent_per_institution_mib")


class FixedStep:
    """A trainer whose 'training' adds a fixed step, drawn once when it is made."""

    def __init__(self, seed: int, n: int) -> None:
        self.step = np.random.default_rng(seed).standard_normal(n, np.float32) * 0.01

    def fit(self, params, cfg, rng, reg=None):
        return {k: v + self.step for k, v in params.items()}, 100, {}

    def evaluate(self, params):
        return 1, {}


class Timed:
    """Times every task an institution handles, by (round, stage), in wall and CPU seconds
    (its work runs in this thread), and counts what it sends: update bytes plus stage payloads
    (as JSON)."""

    def __init__(self, client: Client, seconds: dict[tuple[int, str], dict[str, float]],
                 cpu: dict[tuple[int, str], dict[str, float]]) -> None:
        self.client, self.seconds, self.cpu, self.sent = client, seconds, cpu, 0

    def handle(self, task: Task) -> Reply:
        t, c = time.perf_counter(), time.thread_time()
        reply = self.client.handle(task)
        spent, used = time.perf_counter() - t, time.thread_time() - c
        stage = task.stage.stage if task.kind is TaskKind.STAGE else task.kind.value
        for table, value in ((self.seconds, spent), (self.cpu, used)):
            cell = table[(task.round, stage)]
            cell[task.client_id] = cell.get(task.client_id, 0.0) + value
        if reply.update is not None:
            self.sent += sum(a.nbytes for a in reply.update.values())
        if task.kind is TaskKind.STAGE:
            self.sent += len(json.dumps(reply.payload))
        return reply


def one(k: int, n: int, rounds: int, spec: dict) -> dict[str, float]:
    """Median figures over rounds 1..R-1 (the last round also evaluates) of one run."""
    seconds: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    cpu: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    strategy = fedavg({"epochs": 1}, aggregator=build_aggregator(spec))
    clients = {f"i{j:03d}": Timed(Client(f"i{j:03d}", FixedStep(j, n), build_aggregator(spec)),
                                  seconds, cpu) for j in range(k)}
    history = train(strategy, InProcessTransport(clients), {"w": np.zeros(n, np.float32)},
                    RunSettings("bench", 0, rounds, evaluate_every=10**9))
    figures: dict[str, list[float]] = defaultdict(list)
    for event in history.events[:-1] or history.events:
        stages = {s: c for (r, s), c in seconds.items() if r == event.round}
        server = event.seconds - sum(sum(c.values()) for c in stages.values())
        critical = sum(max(c.values()) for c in stages.values())
        critical_cpu = sum(max(c.values()) for (r, _), c in cpu.items() if r == event.round)
        for name, value in (("serial_round_s", event.seconds), ("server_s", server),
                            ("slowest_institution_s", critical),
                            ("deployment_round_s", server + critical),
                            ("slowest_institution_cpu_s", critical_cpu),
                            ("deployment_round_cpu_s", server + critical_cpu)):
            figures[name].append(value)
    sent = sum(c.sent for c in clients.values()) / (k * rounds)
    return {**{name: statistics.median(values) for name, values in figures.items()},
            "sent_per_institution_mib": sent / 2**20}


def repeated(k: int, n: int, rounds: int, repeats: int,
             specs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Each spec's figures, the median of `repeats` runs of `one`, the specs' runs
    interleaved (so a change in the machine's load falls on all of them alike)."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in specs}
    for _ in range(repeats):
        for name, spec in specs.items():
            runs[name].append(one(k, n, rounds, spec))
    return {name: {f: statistics.median(r[f] for r in rs) for f in FIGURES}
            for name, rs in runs.items()}


def flower(python: Path, k: int, n: int, rounds: int, secure: bool) -> float:
    """Flower's time per round (simulation, workflow time / rounds)."""
    out = subprocess.run([str(python), str(HERE / "_flower_secagg.py"), str(k), str(n),
                          str(rounds), "1" if secure else "0"], capture_output=True,
                         text=True, timeout=1800, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["round_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[10, 100])
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--rounds", type=int, default=5, help="rounds per run (median of 1..R-1)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per protocol (interleaved); figures are medians over them")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads in both runs (0: the library's default)")
    p.add_argument("--flower-k", type=int, nargs="*", default=[10],
                   help="K values for which Flower runs too")
    p.add_argument("--flower-rounds", type=int, default=12,
                   help="Flower's rounds (its actors start in round 1: amortise it)")
    p.add_argument("--flower-python", type=Path,
                   default=HERE.parent / ".venv-flower" / "bin" / "python")
    p.add_argument("--ring", type=int, choices=[32, 64], default=64,
                   help="the secure sum's ring: 64 bits (default) or 32 (frac_bits 16)")
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    secure = SECURE32 if a.ring == 32 else SECURE
    has_flower = a.flower_python.exists()
    blas = None if a.blas_threads <= 0 else a.blas_threads
    print(f"one round in process, updates precomputed; SecAgg+ with 3 neighbours, threshold 2, "
          f"{a.ring}-bit ring; serial = all institutions one after another, deployment = "
          f"server + slowest institution per stage; medians over the rounds of {a.repeats} "
          f"interleaved runs; BLAS threads: {blas or 'default'}")
    print(f"goals at K=100, N=1e6, 64-bit ring: deployment <= {GOALS['deployment_vs_plain']:g}x "
          f"plain, server <= {GOALS['server_vs_plain']:g}x plain")
    records: list[dict[str, Any]] = []
    for k in a.k:
        for n in a.n:
            t0 = time.perf_counter()
            with threadpool_limits(blas):
                got = repeated(k, n, a.rounds, a.repeats, {"plain": PLAIN, "secagg+": secure})
            plain = got["plain"]
            for protocol, r in got.items():
                ratios = {"serial_vs_plain": r["serial_round_s"] / plain["serial_round_s"],
                          "deployment_vs_plain": r["deployment_round_s"]
                          / plain["deployment_round_s"],
                          "deployment_cpu_vs_plain": r["deployment_round_cpu_s"]
                          / plain["deployment_round_cpu_s"],
                          "server_vs_plain": r["server_s"] / plain["server_s"]}
                goals = {} if protocol == "plain" else {
                    "goal_config": k == 100 and n == 1_000_000 and a.ring == 64,
                    **{f"goal_{name}": limit for name, limit in GOALS.items()},
                    **{f"meets_{name}": ratios[name] <= limit for name, limit in GOALS.items()}}
                records.append({"system": "fedsilo", "protocol": protocol,
                                "ring_bits": a.ring if protocol == "secagg+" else None,
                                "k": k, "n": n, "rounds": a.rounds, "repeats": a.repeats,
                                "blas_threads": blas, **r, **ratios, **goals})
            safe = records[-1]
            print(f"K={k:>4} N={n:>9,} ({time.perf_counter() - t0:.0f} s)\n"
                  f"  {'':<28}{'plain':>9}{'secagg+':>10}{'ratio':>8}{'goal':>7}")
            for label, key, ratio, goal in (
                    ("serial round", "serial_round_s", "serial_vs_plain", None),
                    ("deployment-equivalent", "deployment_round_s", "deployment_vs_plain",
                     "deployment_vs_plain"),
                    ("  institutions' CPU time", "deployment_round_cpu_s",
                     "deployment_cpu_vs_plain", None),
                    ("server work", "server_s", "server_vs_plain", "server_vs_plain"),
                    ("slowest institution", "slowest_institution_s", None, None),
                    ("  CPU time", "slowest_institution_cpu_s", None, None)):
                cells = f"{safe[ratio]:7.2f}x" if ratio else f"{'':>8}"
                mark = "" if goal is None or not safe["goal_config"] else (
                    f"{'<=' if safe[f'meets_{goal}'] else '> '}{GOALS[goal]:g}x")
                print(f"  {label + ' (s)':<28}{plain[key]:9.3f}{safe[key]:10.3f}{cells}"
                      f"{mark:>7}")
            print(f"  {'sent per institution (MiB)':<28}{plain['sent_per_institution_mib']:9.2f}"
                  f"{safe['sent_per_institution_mib']:10.2f}", flush=True)
            if k in a.flower_k and has_flower:
                fp = flower(a.flower_python, k, n, a.flower_rounds, False)
                fs = flower(a.flower_python, k, n, a.flower_rounds, True)
                records += [{"system": "flower", "protocol": proto, "k": k, "n": n,
                             "rounds": a.flower_rounds, "parallel_round_s": s,
                             "secure_vs_plain": fs / fp} for proto, s in
                            (("plain", fp), ("secagg+", fs))]
                print(f"{'':>18} Flower (simulation, clients in parallel): plain {fp:7.3f} s | "
                      f"secagg+ {fs:7.3f} s | {fs / fp:4.1f}x", flush=True)
    skipped = [] if has_flower or not a.flower_k else [
        f"flower: no interpreter at {a.flower_python}"]
    for line in skipped:
        print("skipped", line)
    if a.json:
        a.json.write_text(json.dumps({"workload": "one round in process, fixed precomputed "
                                      "update, SecAgg+ 3 neighbours threshold 2",
                                      "records": records, "skipped": skipped}, indent=1))


if __name__ == "__main__":
    main()
