"""Vertical training through the deployed protocol's code (engine/vertical.py driving
client/vertical_party.py), on California housing split by columns between two parties:
a census bureau (population, households, median income, and the label: median house value)
and a land agency (location, housing age, rooms, bedrooms). 20,640 districts, every one
shared. Both parties and the server run in one process over the in-process transport, so the
figures are the protocols' compute (PSI, CKKS, sealing) and the bytes each stage would put on
the wire; a deployment adds the network (tests/integration/test_vertical_deployment.py runs
the same stages over gRPC and mutual TLS).

    .venv/bin/python benchmarks/vertical.py [--epochs 1] [--kind linear_regression|mlp]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from fedsilo.aggregation.secure.identity import SimulatedCA
from fedsilo.client.institution import Institution
from fedsilo.config.schema import parse_config
from fedsilo.config.vertical import open_spec
from fedsilo.engine.vertical import run_vertical_session
from fedsilo.transport.inprocess import InProcessTransport

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "california_housing"
CENSUS = ["population", "households", "median_income", "median_house_value"]
AGENCY = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--kind", default="linear_regression",
                        choices=["linear_regression", "mlp"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DATA / "housing.csv")
    parser.add_argument("--rows", type=int, default=0, help="only the first ROWS districts")
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    args = parser.parse_args()
    table = pd.read_csv(args.data)
    if args.rows:
        table = table.head(args.rows)
    table.insert(0, "district", [f"D-{i:05d}" for i in range(len(table))])
    tables = {"census": table[["district", *CENSUS]],
              "agency": table[["district", *AGENCY]].sample(frac=1.0, random_state=0)}
    cfg = parse_config({
        "run": {"name": "california-vertical", "mode": "vertical", "seed": 1},
        "data": {"task": "regression", "target": "median_house_value", "id": "district",
                 "institutions": [{"name": n, "path": f"{n}.csv"} for n in tables]},
        "model": {"kind": args.kind},
        "vertical": {"label_holder": "census", "epochs": args.epochs, "lr": 0.05,
                     "batch_size": args.batch}}, Path("."))
    ca = SimulatedCA()
    parties = {n: Institution(n, t, keys=ca.keys(n)) for n, t in tables.items()}
    start = time.perf_counter()
    outcome = run_vertical_session(open_spec(cfg), InProcessTransport(parties), "bench")
    total = time.perf_counter() - start
    print(f"{args.kind}, {outcome.shared:,} shared rows, {args.epochs} epoch(s), batch "
          f"{args.batch}: {total:.1f} s in all, training {outcome.seconds:.1f} s")
    for label, metrics in outcome.metrics.items():
        print(f"  {label}: " + ", ".join(f"{k} {v:,.4g}" for k, v in metrics.items()))
    print("  bytes per stage: " + ", ".join(f"{k} {v:,}" for k, v in outcome.wire.items() if v))
    print(f"  in all {sum(outcome.wire.values()):,} bytes")
    if args.json:
        record = {"kind": args.kind, "shared_rows": outcome.shared, "epochs": args.epochs,
                  "batch": args.batch, "total_s": total, "training_s": outcome.seconds,
                  "bytes": sum(outcome.wire.values()),
                  **{f"{label}.{k}": v for label, m in outcome.metrics.items()
                     for k, v in m.items()},
                  **{f"bytes.{k}": v for k, v in outcome.wire.items() if v}}
        args.json.write_text(json.dumps({"records": [record]}, indent=1))


if __name__ == "__main__":
    main()
