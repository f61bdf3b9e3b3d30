"""Goal 3 (../shared/PERFORMANCE.md): server aggregation streams each reply into one
accumulator. Prints GB/s of client input folded in, and peak extra memory, for K clients of
N float32 parameters through the real server path (Strategy.accept: validation of names,
shapes, dtypes and finiteness, then WeightedMean -> PlainSum; then commit), next to the
ceilings on this machine (pre-stacked `w @ X`, single-pass memory read) and Flower's pattern
(a list of all updates, averaged with fresh temporaries).

    python benchmarks/aggregation_throughput.py [--k 100] [--n 1000000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.messages import Reply
from fedsilo.core.params import spec_of as strategy_spec


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--n", type=int, default=1_000_000)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    weights = rng.integers(10, 1000, a.k).astype(np.float64)
    strategy = fedavg({"epochs": 1})
    layer = strategy.aggregator
    state = strategy.init({"w": np.zeros(a.n, np.float32)})
    ids = [f"inst-{i:03d}" for i in range(a.k)]
    # Clients encode (multiply by their weight) on their side; the server receives these.
    encoded = [layer.encode({"w": rng.standard_normal(a.n, dtype=np.float32)}, int(w), {}, {})
               for w in weights]
    replies = [Reply(f"bench/1/fit/{c}", c, 1, 0, int(w), e)
               for c, w, e in zip(ids, weights, encoded)]
    gbytes = a.k * a.n * 4 / 1e9

    def fedsilo_stream():
        _, open_round = strategy.configure(state, ids, 1, "bench", 0)
        for reply in replies:
            assert strategy.accept(open_round, reply) is None
        return strategy.commit(state, open_round)

    spec = {"w": np.zeros(a.n, np.float32)}

    def accumulate_only():
        acc = layer.zero(strategy_spec(spec))
        for e in encoded:
            layer.accumulate(acc, e)
        return layer.finalize(None, acc)[1]

    stacked = np.stack([e["w"] for e in encoded])
    w32 = np.ones(a.k, np.float32)

    def ceiling_gemv():
        return w32 @ stacked

    raw = [e["w"] / w for e, w in zip(encoded, weights)]

    def flower_pattern():  # list of weighted arrays, then reduce, fresh temporaries each
        weighted = [x * w for x, w in zip(raw, weights)]
        return sum(weighted) / weights.sum()

    tracemalloc.start()
    fedsilo_stream()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows = [("fedsilo accumulate (layer only)", best_of(accumulate_only)),
            ("fedsilo accept + commit", best_of(fedsilo_stream)),
            ("ceiling: pre-stacked w @ X", best_of(ceiling_gemv)),
            ("Flower-style list average", best_of(flower_pattern, 3))]
    print(f"K={a.k} clients x N={a.n:,} float32 = {gbytes * 1e3:.0f} MB of client input")
    for name, t in rows:
        print(f"  {name:<32} {t * 1e3:8.1f} ms  {gbytes / t:6.1f} GB/s")
    print("  (accept validates every reply before folding it in: names, shapes, dtypes, "
          "finiteness;\n   that is one more read of each update, so two memory passes)")
    print(f"  fedsilo peak extra memory during accept + commit: {peak / 2**20:.1f} MiB "
          f"(model is {a.n * 4 / 2**20:.1f} MiB; all updates would be "
          f"{a.k * a.n * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
