"""Flower side of the secure-aggregation benchmark (runs in Flower's own venv): K simulated
clients send a random update of N float32; FedAvg plain, or with SecAgg+ (Flower's
SecAggPlusWorkflow + secaggplus_mod, num_shares 3, threshold 2). Prints one JSON line with the
time per round (workflow time / rounds: the simulation engine's start-up is excluded)."""

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


class RandomUpdate(NumPyClient):
    def fit(self, parameters, config):
        rng = np.random.default_rng()
        return [p + rng.standard_normal(p.shape, np.float32) * 0.01 for p in parameters], 100, {}


client = ClientApp(client_fn=lambda context: RandomUpdate().to_client(),
                   mods=[secaggplus_mod] if SECURE else [])
server = ServerApp()
RESULT = {}


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=K,
                      min_available_clients=K,
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
print(json.dumps({"secure": SECURE, "round_s": RESULT.get("round_s")}))
