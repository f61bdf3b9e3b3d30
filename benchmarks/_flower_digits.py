"""Flower side of the digits benchmark, Flower 1.42 Message API with `run_simulation`
(run by simulation_digits.py inside Flower's own venv; prints one JSON line).

    _flower_digits.py K ROUNDS [federated|central] [CPUS_PER_CLIENT]

Round times are the gaps between consecutive calls of the strategy's central `evaluate_fn`
(Flower calls it once before round 1 and after each round's aggregation)."""

import json
import logging
import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402
from _flower_client import fit, score  # noqa: E402
from digits_task import LR, WORKLOADS, accuracy, make_mlp, partitions, pooled_test  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

K, ROUNDS = int(sys.argv[1]), int(sys.argv[2])
WORKLOAD = sys.argv[3] if len(sys.argv) > 3 else "federated"
CPUS = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
EPOCHS, BATCH, _ = WORKLOADS[WORKLOAD]
CENTRAL = WORKLOAD == "central"
t_import = time.perf_counter() - t0
PARTS = None


def data(pid):
    global PARTS
    if PARTS is None:
        PARTS = partitions(K)
    return PARTS[pid]


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    xtr, ytr, _, _ = data(int(context.node_config["partition-id"]))
    return fit(msg, make_mlp(), xtr, ytr, EPOCHS, BATCH, LR)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, xte, yte = data(int(context.node_config["partition-id"]))
    return score(msg, make_mlp(), xte, yte)


server = ServerApp()
STAMPS: list[float] = []
RESULT: dict = {}


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0 if CENTRAL else 1.0,
                      min_train_nodes=K, min_evaluate_nodes=0 if CENTRAL else K,
                      min_available_nodes=K)
    x_all, y_all = pooled_test(partitions(K))
    model = make_mlp()

    def stamp(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
        metrics = None
        if CENTRAL:
            model.load_state_dict(arrays.to_torch_state_dict())
            metrics = MetricRecord({"accuracy": accuracy(model, x_all, y_all)})
        STAMPS.append(time.perf_counter())
        return metrics

    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(make_mlp().state_dict()),
                            num_rounds=ROUNDS, train_config=ConfigRecord({}),
                            evaluate_fn=stamp)
    final = result.evaluate_metrics_serverapp if CENTRAL else result.evaluate_metrics_clientapp
    RESULT["accuracy"] = float(final[ROUNDS]["accuracy"])


logging.getLogger("flwr").setLevel(logging.WARNING)
t1 = time.perf_counter()
run_simulation(server_app=server, client_app=client, num_supernodes=K,
               backend_config={"client_resources": {"num_cpus": CPUS, "num_gpus": 0.0}})
wall = time.perf_counter() - t1
print(json.dumps({"engine": "flower", "workload": WORKLOAD, "wall_s": wall, "import_s": t_import,
                  "round_s": list(np.diff(STAMPS)), "accuracy": RESULT.get("accuracy")}))
