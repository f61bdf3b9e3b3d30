"""Goal 3 (../shared/PERFORMANCE.md): how fast the server folds K client updates of N float32
parameters into the global model, in GB/s of client input, and the peak extra memory.

Rows, all on the same updates in the same run (best of several repeats):

- fedsilo server path (accept + commit): what the server does per reply, `Strategy.accept`
  (validation of names, shapes, dtypes and finiteness, then WeightedMean -> PlainSum folds it
  into one accumulator), and at the end `Strategy.commit`. This is the figure goal 3 is about.
- fedsilo aggregation layer only (accumulate + finalize): the same fold without validation or
  round bookkeeping, a lower bound for the server path.
- ceiling: all updates pre-stacked in one matrix, `w @ X` (needs K models of memory).
- Flower's own functions, imported from flwr in `.venv-flower` (`_flower_aggregate.py`, a
  child process on the same updates drawn from the same seed): `aggregate` (every float32
  layer times its integer example count, `reduce(np.add)`), `aggregate_inplace` (legacy
  FedAvg's default: it deserialises each reply's Parameters, as Flower's server does, then
  scales and adds in place) and `aggregate_arrayrecords` (the Message API's FedAvg, on
  RecordDicts; `Array.numpy()` per update). Without `.venv-flower` these rows are skipped.

fedsilo clients multiply by their weight on their side (the layer's `encode`), so the server
receives weighted updates; Flower's server receives raw updates and weights them itself. Every
row's input is K·N·4 bytes.

    python benchmarks/aggregation_throughput.py [--k 100] [--n 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from _timing import Job, best_of, peak_extra  # noqa: E402  (benchmarks/ is the path)

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.messages import Reply
from fedsilo.core.params import spec_of as strategy_spec


def flower_rows(k: int, n: int, repeat: int) -> list[dict[str, Any]]:
    """Flower's own aggregation functions on the same updates (its venv's Python), or none
    when `.venv-flower` is absent."""
    python = Path(__file__).resolve().parents[1] / ".venv-flower" / "bin" / "python"
    if not python.exists():
        print("  (Flower rows skipped: no .venv-flower; see README's benchmark set-up)")
        return []
    out = subprocess.run([str(python), str(Path(__file__).with_name("_flower_aggregate.py")),
                          str(k), str(n), str(repeat)], capture_output=True, text=True,
                         check=True)
    return list(json.loads(out.stdout))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5, help="best of this many calls per row")
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    counts = [int(c) for c in rng.integers(10, 1000, a.k)]
    strategy = fedavg({"epochs": 1})
    layer = strategy.aggregator
    state = strategy.init({"w": np.zeros(a.n, np.float32)})
    ids = [f"inst-{i:03d}" for i in range(a.k)]
    raw = [rng.standard_normal(a.n, dtype=np.float32) for _ in range(a.k)]
    # Clients encode (multiply by their weight) on their side; the server receives these.
    encoded = [layer.encode({"w": x}, c, {}, {}) for x, c in zip(raw, counts)]
    replies = [Reply(f"bench/1/fit/{c}", c, 1, 0, n, e)
               for c, n, e in zip(ids, counts, encoded)]

    def server_path(_: None) -> Any:
        _, open_round = strategy.configure(state, ids, 1, "bench", 0)
        for reply in replies:
            assert strategy.accept(state, open_round, reply) is None
        return strategy.commit(state, open_round)

    spec = strategy_spec({"w": np.zeros(a.n, np.float32)})

    def layer_only(_: None) -> Any:
        acc = layer.zero(spec)
        for e in encoded:
            layer.accumulate(acc, e)
        return layer.finalize(None, acc)[1]

    stacked = np.stack([e["w"] for e in encoded])
    w32 = np.ones(a.k, np.float32)

    def nothing() -> None:
        return None

    rows: list[tuple[str, str, Job, int]] = [
        ("fedsilo", "server path: accept (validate + fold) per reply, then commit",
         (server_path, nothing), a.repeat),
        ("fedsilo", "aggregation layer only: accumulate + finalize, no validation",
         (layer_only, nothing), a.repeat),
        ("ceiling", "pre-stacked w @ X (K models in memory)",
         (lambda _: w32 @ stacked, nothing), a.repeat)]
    gbytes = a.k * a.n * 4 / 1e9
    print(f"K={a.k} clients x N={a.n:,} float32 = {gbytes * 1e3:.0f} MB of client input "
          f"(each row: the best of {a.repeat} calls)")
    records = []
    for system, path, job, repeat in rows:
        seconds = best_of(job, repeat)
        peak = peak_extra(job)
        records.append({"system": system, "path": path, "k": a.k, "n": a.n,
                        "ms": seconds * 1e3, "gb_per_s": gbytes / seconds,
                        "peak_extra_mib": peak / 2**20})
        print(f"  {system:<8} {path:<66} {seconds * 1e3:8.1f} ms {gbytes / seconds:6.1f} GB/s"
              f"  peak extra {peak / 2**20:7.1f} MiB", flush=True)
    flower = flower_rows(a.k, a.n, a.repeat)
    for r in flower:
        r.update(gb_per_s=gbytes / (r["ms"] / 1e3), k=a.k, n=a.n)
        print(f"  {'flower':<8} {r['path']:<66} {r['ms']:8.1f} ms {r['gb_per_s']:6.1f} GB/s"
              f"  peak extra {r['peak_extra_mib']:7.1f} MiB", flush=True)
    records += flower
    print(f"  (one model is {a.n * 4 / 2**20:.1f} MiB; all updates are "
          f"{a.k * a.n * 4 / 2**20:.0f} MiB. accept reads each update twice: validation, "
          f"then the fold)")
    if a.json:
        a.json.write_text(json.dumps({"records": records}, indent=1))


if __name__ == "__main__":
    main()
