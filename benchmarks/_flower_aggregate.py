"""Flower 1.42's own aggregation functions, timed on aggregation_throughput.py's workload (the
same K updates of N float32 drawn from the same seed, the same integer example counts). Runs
with `.venv-flower/bin/python`; prints the rows as JSON.

    .venv-flower/bin/python benchmarks/_flower_aggregate.py K N REPEAT
"""

from __future__ import annotations

import json
import sys

import numpy as np
from _timing import best_of, peak_extra
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.strategy.aggregate import aggregate, aggregate_inplace
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords


def main() -> None:
    k, n, repeat = (int(v) for v in sys.argv[1:4])
    rng = np.random.default_rng(0)  # the parent's draws, in its order
    counts = [int(c) for c in rng.integers(10, 1000, k)]
    raw = [rng.standard_normal(n, dtype=np.float32) for _ in range(k)]
    results = [([x], c) for x, c in zip(raw, counts)]
    fit = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([x]), c, {}))
           for x, c in zip(raw, counts)]
    records = [RecordDict({"arrays": ArrayRecord([x]),
                           "metrics": MetricRecord({"num-examples": c})})
               for x, c in zip(raw, counts)]

    def nothing() -> None:
        return None

    rows = [("flwr aggregate(): count-weighted arrays, reduce(np.add)",
             (lambda _: aggregate(results), nothing)),
            ("flwr aggregate_inplace() (FedAvg default), deserialising each reply",
             (lambda _: aggregate_inplace(fit), nothing)),
            ("flwr aggregate_arrayrecords() (Message API FedAvg)",
             (lambda _: aggregate_arrayrecords(records, "num-examples"), nothing))]
    out = []
    for path, job in rows:
        out.append({"system": "flower", "path": path, "ms": best_of(job, repeat) * 1e3,
                    "peak_extra_mib": peak_extra(job) / 2**20})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
