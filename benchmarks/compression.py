"""Bytes per fit reply with and without top-k sparsification (aggregation/compress.py), and the
final accuracy of each run.

Every fit reply an institution sends is serialized with the real wire encoding
(transport/serde.py `encode`: the JSON envelope with the manifest, then the raw array bytes in
chunk frames) and its frames' bytes are counted. Two tasks:

- heart disease (examples/heart_disease, 4 hospitals, logistic regression, FedAvg, 15 rounds):
  the config run, with [[aggregation.layers]] = topk when compressed;
- digits (scikit-learn load_digits split IID over 10 institutions, 64-32-10 MLP, FedAvg,
  benchmarks/digits_task.py), through the Python API.

Run from the repository root:  .venv/bin/python benchmarks/compression.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fedsilo
from fedsilo.aggregation.build import build_aggregator
from fedsilo.client.factory import ModelCache
from fedsilo.client.institution import Institution
from fedsilo.config.build import build_schema
from fedsilo.config.schema import AggregationSection, load_config
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.session import run_session
from fedsilo.simulation.institutions import load_tables
from fedsilo.transport import serde
from fedsilo.transport.inprocess import InProcessTransport

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from digits_task import BATCH, EPOCHS, LR, make_mlp, partitions  # noqa: E402

HEART = HERE.parent / "examples" / "heart_disease" / "heart_disease.toml"


class Metered:
    """A handler that counts the serialized bytes of every fit reply it sends."""

    def __init__(self, inner: Any, sizes: list[int]) -> None:
        self.inner, self.sizes = inner, sizes

    def handle(self, task: Task) -> Reply:
        reply = self.inner.handle(task)
        if task.kind is TaskKind.FIT and reply.update is not None:
            frames = serde.encode("reply", serde.reply_meta(reply), reply.update)
            self.sizes.append(sum(len(f) for f in frames))
        return reply


def heart(fraction: float | None) -> tuple[float, float]:
    """(mean bytes per fit reply, final accuracy) of the heart-disease example."""
    cfg = load_config(HEART)
    layers = None if fraction is None else [{"kind": "topk", "fraction": fraction}]
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"compare": False}),
                                 "aggregation": AggregationSection(layers=layers)})
    tables = load_tables(cfg)
    schema = build_schema(cfg, next(iter(tables.values())))
    models, sizes = ModelCache(), list[int]()
    handlers = {n: Metered(Institution(n, t, models), sizes) for n, t in sorted(tables.items())}
    result = run_session(cfg, InProcessTransport(handlers), schema, "compression")
    return float(np.mean(sizes)), result.history.events[-1].federated["accuracy"]


def digits(fraction: float | None, k: int = 10, rounds: int = 20) -> tuple[float, float]:
    """(mean bytes per fit reply, final accuracy) of the digits MLP."""
    torch.set_num_threads(1)
    strategy = fedsilo.fedavg({"epochs": EPOCHS, "batch_size": BATCH, "lr": LR})
    spec = {"layer": "mean"} if fraction is None else {"layers": [
        {"kind": "topk", "fraction": fraction}, {"kind": "default_bound"},
        {"kind": "mean", "weighted": True}, {"kind": "sum"}]}
    strategy = dataclasses.replace(strategy, aggregator=build_aggregator(spec))
    model, sizes, clients = make_mlp(), list[int](), {}
    for i, (xtr, ytr, xte, yte) in enumerate(partitions(k)):
        data = fedsilo.LocalData(xtr, ytr.astype(np.float32), xte, yte.astype(np.float32),
                                 "multiclass", 10)
        name = f"inst-{i:03d}"
        client = fedsilo.Client(name, fedsilo.TorchTrainer(model, data), build_aggregator(spec))
        clients[name] = Metered(client, sizes)
    initial = next(iter(clients.values())).inner.trainer.initial_params()
    history = fedsilo.train(strategy, InProcessTransport(clients), initial,
                            fedsilo.RunSettings("compression", 0, rounds))
    return float(np.mean(sizes)), history.events[-1].federated["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--json", type=Path, help="also write the records to this file")
    args = parser.parse_args()
    rows = []
    for task, run in (("heart disease (logistic regression)", heart),
                      ("digits (MLP 64-32-10)", digits)):
        base, base_acc = run(None)
        rows.append((task, "none", base, 1.0, base_acc))
        for f in args.fractions:
            size, acc = run(f)
            rows.append((task, f"topk {f:g}", size, size / base, acc))
    print("| task | compression | bytes per fit reply | vs dense | final accuracy |")
    print("|---|---|---:|---:|---:|")
    for task, how, size, ratio, acc in rows:
        print(f"| {task} | {how} | {size:,.0f} | {ratio:.2f} | {acc:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"records": [
            {"task": task, "compression": how, "bytes_per_fit_reply": size,
             "vs_dense": ratio, "final_accuracy": acc} for task, how, size, ratio, acc in rows]},
            indent=1))


if __name__ == "__main__":
    main()
