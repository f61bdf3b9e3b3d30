"""fedsilo side of the digits benchmark (run by simulation_digits.py; prints one JSON line)."""

import json
import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from digits_task import BATCH, EPOCHS, LR, make_mlp, partitions  # noqa: E402

import fedsilo  # noqa: E402

k, rounds = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
strategy = fedsilo.fedavg({"epochs": EPOCHS, "batch_size": BATCH, "lr": LR})
model = make_mlp()
clients = {}
for i, (xtr, ytr, xte, yte) in enumerate(partitions(k)):
    data = fedsilo.LocalData(xtr, ytr.astype(np.float32), xte, yte.astype(np.float32),
                             "multiclass", 10)
    clients[f"inst-{i:03d}"] = fedsilo.Client(f"inst-{i:03d}", fedsilo.TorchTrainer(model, data),
                                              strategy.aggregator)
transport = fedsilo.InProcessTransport(clients)
initial = next(iter(clients.values())).trainer.initial_params()
history = fedsilo.train(strategy, transport, initial, fedsilo.RunSettings("bench", 0, rounds))
wall = time.perf_counter() - t1
print(json.dumps({"engine": "fedsilo", "wall_s": wall, "import_s": t_import,
                  "round_s": [e.seconds for e in history.events],
                  "accuracy": history.events[-1].federated["accuracy"]}))
