"""Flower side of ray_scaling.py (Flower 1.42's Message API and `run_simulation` on its Ray
backend, run in Flower's own venv); prints one JSON line.

    _flower_scaling.py K ROUNDS CPUS_PER_CLIENT HIDDEN

The workload is fedsilo's (_ray_scaling_run.py): the same rows and train/test split per
institution (_scaling_data.py), features standardised with the pooled training rows' mean and
population std (what fedsilo's federated statistics give; computed here by the server before
round 1, outside the timed rounds), the same MLP and initial weights (torch seed 0), FedAvg
over all K clients every round weighted by training rows, SGD, 1 epoch of batch 16, lr 0.05,
and one federated evaluation after the last round (every client on its test rows, the accuracy
weighted by test rows); no evaluation in the other rounds.

A round's seconds run from the strategy's `configure_train` to the end of its
`aggregate_train` (fedsilo's round: from sending the fit tasks to the commit, evaluation
excluded)."""

import json
import logging
import resource
import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _flower_client import fit, score  # noqa: E402
from _scaling_data import CLASSES, FEATURES, name, rows, split  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

K, ROUNDS, CPUS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
HIDDEN = [int(h) for h in sys.argv[4].split(",")]
EPOCHS, BATCH, LR = 1, 16, 0.05
t_import = time.perf_counter() - t0


def make_mlp() -> torch.nn.Module:
    """fedsilo's built-in MLP (client/models.py), seeded the same way."""
    torch.manual_seed(0)
    sizes, layers = [FEATURES, *HIDDEN], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], CLASSES))


def data(context: Context, config: ConfigRecord):
    """This client's standardised train and test rows."""
    who = name(int(context.node_config["partition-id"]))
    x, y = rows(who)
    train, test = split(who, y)
    x = ((x - np.asarray(config["mean"])) / np.asarray(config["std"])).astype(np.float32)
    return x[train], y[train], x[test], y[test]


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    xtr, ytr, _, _ = data(context, msg.content["config"])
    return fit(msg, make_mlp(), xtr, ytr, EPOCHS, BATCH, LR)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, xte, yte = data(context, msg.content["config"])
    return score(msg, make_mlp(), xte, yte)


class TimedFedAvg(FedAvg):
    """FedAvg that stamps each round's start and end, and evaluates after the last round only."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.starts: list[float] = []
        self.ends: list[float] = []

    def configure_train(self, server_round, arrays, config, grid):
        self.starts.append(time.perf_counter())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        out = super().aggregate_train(server_round, replies)
        self.ends.append(time.perf_counter())
        return out

    def configure_evaluate(self, server_round, arrays, config, grid):
        if server_round < ROUNDS:
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)


server = ServerApp()
RESULT: dict = {}


@server.main()
def main(grid: Grid, context: Context) -> None:
    pooled = []
    for i in range(K):
        x, y = rows(name(i))
        pooled.append(x[split(name(i), y)[0]].astype(np.float64))
    stacked = np.concatenate(pooled)
    stats = ConfigRecord({"mean": stacked.mean(axis=0).tolist(),
                          "std": stacked.std(axis=0).tolist()})
    strategy = TimedFedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=K,
                           min_evaluate_nodes=K, min_available_nodes=K)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(make_mlp().state_dict()),
                            num_rounds=ROUNDS, train_config=stats, evaluate_config=stats)
    RESULT["round_s"] = [e - s for s, e in zip(strategy.starts, strategy.ends)]
    RESULT["accuracy"] = float(result.evaluate_metrics_clientapp[ROUNDS]["accuracy"])


logging.getLogger("flwr").setLevel(logging.WARNING)
t1 = time.perf_counter()
run_simulation(server_app=server, client_app=client, num_supernodes=K,
               backend_config={"client_resources": {"num_cpus": CPUS, "num_gpus": 0.0}})
print(json.dumps({"engine": "flower", "wall_s": time.perf_counter() - t1, "import_s": t_import,
                  "round_s": RESULT["round_s"], "accuracy": RESULT["accuracy"],
                  "params": sum(p.numel() for p in make_mlp().parameters()),
                  "server_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
