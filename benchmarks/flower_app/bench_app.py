"""Flower side of the deployment benchmark: FedAvg over a dummy model, clients echo it."""

import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    content = RecordDict({"arrays": msg.content["arrays"],
                          "metrics": MetricRecord({"num-examples": 100})})
    return Message(content=content, reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    n = int(context.run_config["num-params"])
    rounds = int(context.run_config["rounds"])
    stamps = []
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=4,
                      min_available_nodes=4)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(n, np.float32)]),
                   num_rounds=rounds, train_config=ConfigRecord({}),
                   evaluate_fn=lambda rnd, arrays: stamps.append(time.perf_counter()))
    with open(str(context.run_config["out"]), "w") as f:
        f.write(" ".join(f"{b - a:.4f}" for a, b in zip(stamps, stamps[1:])))
