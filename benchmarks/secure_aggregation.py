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
  (network time excluded: deployment_round.py measures that).

With `.venv-flower` present, Flower 1.42's simulation runs the same workload plain and with
its SecAgg+ (SecAggPlusWorkflow + secaggplus_mod, 3 shares, threshold 2) in the same run, for
the K values in --flower-k (its per-round time excludes the engine's start-up; Flower's
clients run in parallel over the machine's cores, so it is not a serial figure).

    python benchmarks/secure_aggregation.py [--k 10 100] [--n 100000 1000000] [--rounds 5]
        [--ring 64] [--json out.json]
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


class FixedStep:
    """A trainer whose 'training' adds a fixed step, drawn once when it is made."""

    def __init__(self, seed: int, n: int) -> None:
        self.step = np.random.default_rng(seed).standard_normal(n, np.float32) * 0.01

    def fit(self, params, cfg, rng, reg=None):
        return {k: v + self.step for k, v in params.items()}, 100, {}

    def evaluate(self, params):
        return 1, {}


class Timed:
    """Times every task an institution handles, by (round, stage), and counts what it sends:
    update bytes plus stage payloads (as JSON)."""

    def __init__(self, client: Client, seconds: dict[tuple[int, str], dict[str, float]]) -> None:
        self.client, self.seconds, self.sent = client, seconds, 0

    def handle(self, task: Task) -> Reply:
        t = time.perf_counter()
        reply = self.client.handle(task)
        spent = time.perf_counter() - t
        stage = task.stage.stage if task.kind is TaskKind.STAGE else task.kind.value
        cell = self.seconds[(task.round, stage)]
        cell[task.client_id] = cell.get(task.client_id, 0.0) + spent
        if reply.update is not None:
            self.sent += sum(a.nbytes for a in reply.update.values())
        if task.kind is TaskKind.STAGE:
            self.sent += len(json.dumps(reply.payload))
        return reply


def one(k: int, n: int, rounds: int, spec: dict) -> dict[str, float]:
    """Median figures over rounds 1..R-1 (the last round also evaluates) of one run."""
    seconds: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    strategy = fedavg({"epochs": 1}, aggregator=build_aggregator(spec))
    clients = {f"i{j:03d}": Timed(Client(f"i{j:03d}", FixedStep(j, n), build_aggregator(spec)),
                                  seconds) for j in range(k)}
    history = train(strategy, InProcessTransport(clients), {"w": np.zeros(n, np.float32)},
                    RunSettings("bench", 0, rounds, evaluate_every=10**9))
    serial, deploy, server, slowest = [], [], [], []
    for event in history.events[:-1] or history.events:
        stages = {s: c for (r, s), c in seconds.items() if r == event.round}
        client_total = sum(sum(c.values()) for c in stages.values())
        critical = sum(max(c.values()) for c in stages.values())
        serial.append(event.seconds)
        server.append(event.seconds - client_total)
        slowest.append(critical)
        deploy.append(event.seconds - client_total + critical)
    sent = sum(c.sent for c in clients.values()) / (k * rounds)
    return {"serial_round_s": statistics.median(serial),
            "deployment_round_s": statistics.median(deploy),
            "server_s": statistics.median(server),
            "slowest_institution_s": statistics.median(slowest),
            "sent_per_institution_mib": sent / 2**20}


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
    print(f"one round in process, updates precomputed; SecAgg+ with 3 neighbours, threshold 2, "
          f"{a.ring}-bit ring; serial = all institutions one after another, deployment = "
          f"server + slowest institution per stage")
    records: list[dict[str, Any]] = []
    for k in a.k:
        for n in a.n:
            t0 = time.perf_counter()
            plain = one(k, n, a.rounds, PLAIN)
            safe = one(k, n, a.rounds, secure)
            for protocol, r in (("plain", plain), ("secagg+", safe)):
                records.append({"system": "fedsilo", "protocol": protocol,
                                "ring_bits": a.ring if protocol == "secagg+" else None,
                                "k": k, "n": n, "rounds": a.rounds, **r,
                                "serial_vs_plain": r["serial_round_s"] / plain["serial_round_s"],
                                "deployment_vs_plain": r["deployment_round_s"]
                                / plain["deployment_round_s"],
                                "server_vs_plain": r["server_s"] / plain["server_s"]})
            print(f"K={k:>4} N={n:>9,}: serial plain {plain['serial_round_s']:7.3f} s, secagg+ "
                  f"{safe['serial_round_s']:7.3f} s ({records[-1]['serial_vs_plain']:4.1f}x) | "
                  f"deployment plain {plain['deployment_round_s']:7.3f} s, secagg+ "
                  f"{safe['deployment_round_s']:7.3f} s "
                  f"({records[-1]['deployment_vs_plain']:4.1f}x) | server plain "
                  f"{plain['server_s']:6.3f} s, secagg+ {safe['server_s']:6.3f} s "
                  f"({records[-1]['server_vs_plain']:4.1f}x) | sent per institution "
                  f"{plain['sent_per_institution_mib']:.2f} -> "
                  f"{safe['sent_per_institution_mib']:.2f} MiB "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
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
