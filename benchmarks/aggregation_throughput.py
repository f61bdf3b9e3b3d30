"""Goal 3 (../shared/PERFORMANCE.md): how fast the server folds K client updates of N float32
parameters into the global model, in GB/s of client input, and the peak extra memory.

Rows, all on the same updates in the same run (best of several repeats):

- fedsilo server path (accept + commit): what the server does per reply, `Strategy.accept`
  (validation of names, shapes, dtypes and finiteness, then WeightedMean -> PlainSum folds it
  into one accumulator), and at the end `Strategy.commit`. This is the figure goal 3 is about.
- fedsilo aggregation layer only (accumulate + finalize): the same fold without validation or
  round bookkeeping, a lower bound for the server path.
- ceiling: all updates pre-stacked in one matrix, `w @ X` (needs K models of memory).
- Flower `aggregate`: flwr 1.42's `flwr/server/strategy/aggregate.py::aggregate`, reproduced
  line for line: every float32 layer multiplied by its client's integer example count (so it
  stays float32), summed with `reduce(np.add, ...)`, divided by the total count.
- Flower `aggregate_inplace` (the default of flwr's legacy FedAvg, `inplace=True`): scaling
  factors count / total, each update scaled in place and added into the first one.
- Flower `aggregate_arrayrecords` (flwr/serverapp/strategy/strategy_utils.py, what the
  Message API's FedAvg uses): `acc += value.numpy() * (count / total)`, a fresh temporary
  per update.

The Flower functions are copied from flwr 1.42's source with their input as arrays: the
deserialisation of each reply (`parameters_to_ndarrays`, `Array.numpy()`) is left out, as
fedsilo's transport decoding is left out of its rows.

fedsilo clients multiply by their weight on their side (the layer's `encode`), so the server
receives weighted updates; Flower's server receives raw updates and weights them itself. Every
row's input is K·N·4 bytes.

    python benchmarks/aggregation_throughput.py [--k 100] [--n 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from functools import partial, reduce
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.core.messages import Reply
from fedsilo.core.params import spec_of as strategy_spec

Job = tuple[Callable[[Any], Any], Callable[[], Any]]  # (timed call, untimed setup of its input)


def best_of(job: Job, repeat: int) -> float:
    """The fastest of `repeat` calls, in seconds (each one's input set up untimed)."""
    fn, setup = job
    times = []
    for _ in range(repeat):
        arg = setup()
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return min(times)


def peak_extra(job: Job) -> int:
    """Peak bytes allocated during one call (numpy reports its buffers to tracemalloc)."""
    fn, setup = job
    arg = setup()
    tracemalloc.start()
    fn(arg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def flower_aggregate(results: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    """flwr 1.42 flwr/server/strategy/aggregate.py `aggregate`, unchanged."""
    num_examples_total = sum(num_examples for (_, num_examples) in results)
    weighted_weights = [[layer * num_examples for layer in weights]
                        for weights, num_examples in results]
    return [reduce(np.add, layer_updates) / num_examples_total
            for layer_updates in zip(*weighted_weights)]


def flower_aggregate_inplace(results: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    """flwr 1.42 `aggregate_inplace` (FedAvg's default), unchanged but for the input: arrays
    instead of serialised FitRes (deserialising, left out here, makes fresh arrays, so the
    caller passes fresh copies, made untimed)."""
    num_examples_total = sum(n for (_, n) in results)
    scaling_factors = np.asarray([n / num_examples_total for _, n in results])

    def _try_inplace(x, y, np_binary_op):
        return (np_binary_op(x, y, out=x) if np.can_cast(y, x.dtype, casting="same_kind")
                else np_binary_op(x, np.array(y, x.dtype), out=x))

    params = [_try_inplace(x, scaling_factors[0], np_binary_op=np.multiply)
              for x in results[0][0]]
    for i, (arrays, _) in enumerate(results[1:], start=1):
        res = (_try_inplace(x, scaling_factors[i], np_binary_op=np.multiply)
               for x in arrays)
        params = [reduce(partial(_try_inplace, np_binary_op=np.add), layer_updates)
                  for layer_updates in zip(params, res)]
    return params


def flower_aggregate_arrayrecords(results: list[tuple[list[np.ndarray], int]]
                                  ) -> list[np.ndarray]:
    """flwr 1.42 `aggregate_arrayrecords` (Message API FedAvg), on arrays."""
    total_weight = sum(float(n) for _, n in results)
    aggregated: dict[int, np.ndarray] = {}
    for arrays, n in results:
        weight = n / total_weight
        for key, value in enumerate(arrays):
            if key not in aggregated:
                aggregated[key] = value * weight
            else:
                aggregated[key] += value * weight
    return [np.asarray(v) for v in aggregated.values()]


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
    results = [([x], c) for x, c in zip(raw, counts)]
    def nothing() -> None:
        return None

    def fresh() -> list[tuple[list[np.ndarray], int]]:
        return [([x.copy()], c) for x, c in zip(raw, counts)]

    rows: list[tuple[str, str, Job, int]] = [
        ("fedsilo", "server path: accept (validate + fold) per reply, then commit",
         (server_path, nothing), a.repeat),
        ("fedsilo", "aggregation layer only: accumulate + finalize, no validation",
         (layer_only, nothing), a.repeat),
        ("ceiling", "pre-stacked w @ X (K models in memory)",
         (lambda _: w32 @ stacked, nothing), a.repeat),
        ("flower", "flwr aggregate(): list of count-weighted arrays, reduce(np.add)",
         (lambda _: flower_aggregate(results), nothing), a.repeat),
        ("flower", "flwr aggregate_inplace() (FedAvg default), fresh input arrays",
         (flower_aggregate_inplace, fresh), a.repeat),
        ("flower", "flwr aggregate_arrayrecords() (Message API FedAvg)",
         (lambda _: flower_aggregate_arrayrecords(results), nothing), a.repeat)]
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
    print(f"  (one model is {a.n * 4 / 2**20:.1f} MiB; all updates are "
          f"{a.k * a.n * 4 / 2**20:.0f} MiB. accept reads each update twice: validation, "
          f"then the fold)")
    if a.json:
        a.json.write_text(json.dumps({"records": records}, indent=1))


if __name__ == "__main__":
    main()
