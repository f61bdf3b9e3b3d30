"""Goal 4 (../shared/PERFORMANCE.md): wall time of one round with SecAgg+ vs the plain round,
for K institutions and N parameters, and the bytes each institution sends.

Both rounds run the real round loop in one process (in-process transport, so the figures are
the protocol's compute: key agreement, Shamir shares, AES-GCM, AES-CTR masks, unmasking).
Institutions return a random update instead of training. SecAgg+ uses Flower's benchmark
setting: 3 neighbours ("shares"), threshold 2.

With `.venv-flower` present, Flower 1.42's simulation runs the same workload plain and with
its SecAgg+ (SecAggPlusWorkflow + secaggplus_mod, 3 shares, threshold 2) in the same run, for
the (K, N) pairs in --flower-k (its per-round time excludes the engine's start-up).

    python benchmarks/secure_aggregation.py [--k 10 100] [--n 100000 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

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


class RandomUpdate:
    """A trainer whose 'training' moves every parameter by a small random step."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def fit(self, params, cfg, rng, reg=None):
        return {k: v + self.rng.standard_normal(v.shape, np.float32) * 0.01
                for k, v in params.items()}, 100, {}

    def evaluate(self, params):
        return 1, {}


class Metered:
    """Counts what an institution sends: update bytes plus stage payloads (as JSON)."""

    def __init__(self, client: Client) -> None:
        self.client, self.sent = client, 0

    def handle(self, task: Task) -> Reply:
        reply = self.client.handle(task)
        if reply.update is not None:
            self.sent += sum(a.nbytes for a in reply.update.values())
        if task.kind is TaskKind.STAGE:
            self.sent += len(json.dumps(reply.payload))
        return reply


def one(k: int, n: int, rounds: int, spec: dict) -> tuple[float, float]:
    strategy = fedavg({"epochs": 1}, aggregator=build_aggregator(spec))
    clients = {f"i{j:03d}": Metered(Client(f"i{j:03d}", RandomUpdate(j), build_aggregator(spec)))
               for j in range(k)}
    history = train(strategy, InProcessTransport(clients), {"w": np.zeros(n, np.float32)},
                       RunSettings("bench", 0, rounds, evaluate_every=10**9))
    seconds = statistics.median(e.seconds for e in history.events[:-1] or history.events)
    return seconds, sum(c.sent for c in clients.values()) / (k * rounds)


HERE = Path(__file__).resolve().parent


def flower(python: Path, k: int, n: int, rounds: int, secure: bool) -> float:
    out = subprocess.run([str(python), str(HERE / "_flower_secagg.py"), str(k), str(n),
                          str(rounds), "1" if secure else "0"], capture_output=True,
                         text=True, timeout=1800, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["round_s"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, nargs="+", default=[10, 100])
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--flower-k", type=int, nargs="*", default=[10],
                   help="K values for which Flower runs too")
    p.add_argument("--flower-rounds", type=int, default=12,
                   help="Flower's rounds (its actors start in round 1: amortise it)")
    p.add_argument("--flower-python", type=Path,
                   default=HERE.parent / ".venv-flower" / "bin" / "python")
    p.add_argument("--ring", type=int, choices=[32, 64], default=64,
                   help="the secure sum's ring: 64 bits (default) or 32 (frac_bits 16)")
    a = p.parse_args()
    secure = SECURE32 if a.ring == 32 else SECURE
    print(f"one round, in process; SecAgg+ with 3 neighbours, threshold 2, {a.ring}-bit ring")
    for k in a.k:
        for n in a.n:
            t0 = time.perf_counter()
            plain, plain_bytes = one(k, n, a.rounds, PLAIN)
            safe, safe_bytes = one(k, n, a.rounds, secure)
            print(f"K={k:>4} N={n:>9,}: plain {plain:7.3f} s | secagg+ {safe:7.3f} s | "
                  f"{safe / plain:4.1f}x | sent per institution: plain "
                  f"{plain_bytes / 2**20:6.2f} MiB, secagg+ {safe_bytes / 2**20:6.2f} MiB "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if k in a.flower_k and a.flower_python.exists():
                fp = flower(a.flower_python, k, n, a.flower_rounds, False)
                fs = flower(a.flower_python, k, n, a.flower_rounds, True)
                print(f"{'':>18} Flower: plain {fp:7.3f} s | secagg+ {fs:7.3f} s | "
                      f"{fs / fp:4.1f}x | Flower secagg+ / fedsilo secagg+ {fs / safe:5.1f}x",
                      flush=True)


if __name__ == "__main__":
    main()
