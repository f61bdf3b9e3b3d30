"""Flower side of the secure-aggregation benchmark (runs in Flower's own venv): K simulated
clients send the model plus a fixed step of N float32 (drawn once per process, before any
round, so no round pays for random numbers); FedAvg plain, or with SecAgg+ (Flower's
SecAggPlusWorkflow + secaggplus_mod, num_shares 3, threshold 2). Prints one JSON line with the
time per round (workflow time / rounds: the simulation engine's start-up is excluded) and each
round's time (gaps between calls of the strategy's central `evaluate_fn`, which does nothing
else: Flower calls it before round 1 and after each round's aggregation).

    _flower_secagg.py K N ROUNDS SECURE(0|1)"""

import json
import logging
import sys
import time

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation

K, N, ROUNDS, SECURE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"


STEP = np.random.default_rng(0).standard_normal(N, np.float32) * 0.01


class FixedStep(NumPyClient):
    def fit(self, parameters, config):
        return [p + STEP for p in parameters], 100, {}


client = ClientApp(client_fn=lambda context: FixedStep().to_client(),
                   mods=[secaggplus_mod] if SECURE else [])
server = ServerApp()
RESULT = {}
STAMPS: list[float] = []


def stamp(rnd, parameters, config):
    STAMPS.append(time.perf_counter())


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=K,
                      min_available_clients=K, evaluate_fn=stamp,
                      initial_parameters=ndarrays_to_parameters([np.zeros(N, np.float32)]))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=ROUNDS),
                           strategy=strategy)
    fit = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2) if SECURE else None
    t = time.perf_counter()
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    RESULT["round_s"] = (time.perf_counter() - t) / ROUNDS


logging.getLogger("flwr").setLevel(logging.WARNING)
run_simulation(server_app=server, client_app=client, num_supernodes=K,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
print(json.dumps({"secure": SECURE, "round_s": RESULT.get("round_s"),
                  "rounds_s": list(np.diff(STAMPS))}))
