"""fedsilo side of the digits benchmark (run by simulation_digits.py; prints one JSON line).

    _fedsilo_digits.py K ROUNDS [federated|central]

Round times are the gaps between consecutive commits (evaluation included), the first
measured from the start of training, as Flower's side measures them."""

import json
import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from digits_task import LR, WORKLOADS, make_mlp, partitions, pooled_test  # noqa: E402

import fedsilo  # noqa: E402

k, rounds = int(sys.argv[1]), int(sys.argv[2])
workload = sys.argv[3] if len(sys.argv) > 3 else "federated"
epochs, batch, _ = WORKLOADS[workload]
central = workload == "central"
torch.set_num_threads(1)
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
strategy = fedsilo.fedavg({"epochs": epochs, "batch_size": batch, "lr": LR})
model = make_mlp()
clients = {}
parts = partitions(k)
for i, (xtr, ytr, xte, yte) in enumerate(parts):
    data = fedsilo.LocalData(xtr, ytr.astype(np.float32), xte, yte.astype(np.float32),
                             "multiclass", 10)
    clients[f"inst-{i:03d}"] = fedsilo.Client(f"inst-{i:03d}", fedsilo.TorchTrainer(model, data),
                                              strategy.aggregator)
transport = fedsilo.InProcessTransport(clients)
initial = next(iter(clients.values())).trainer.initial_params()
x_all, y_all = pooled_test(parts)
server_eval = fedsilo.TorchTrainer(make_mlp(), fedsilo.LocalData(
    x_all[:1], y_all[:1].astype(np.float32), x_all, y_all.astype(np.float32), "multiclass", 10))
stamps = [time.perf_counter()]
accuracy: dict[int, float] = {}


def commit(number: int, state) -> None:
    if central:
        accuracy[number] = server_eval.evaluate(state.params)[1]["accuracy"]
    stamps.append(time.perf_counter())


# central: no federated evaluation but the one fedsilo always makes after the last round
every = 10**9 if central else 1
history = fedsilo.train(strategy, transport, initial,
                        fedsilo.RunSettings("bench", 0, rounds, evaluate_every=every),
                        on_commit=commit)
wall = time.perf_counter() - t1
final = accuracy[rounds] if central else history.events[-1].federated["accuracy"]
print(json.dumps({"engine": "fedsilo", "workload": workload, "wall_s": wall,
                  "import_s": t_import, "round_s": list(np.diff(stamps)), "accuracy": final}))
