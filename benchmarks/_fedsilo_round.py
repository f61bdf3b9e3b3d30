"""fedsilo side of round_scaling.py: K institutions in process, a model of N float32, plain
FedAvg; each institution returns the model plus a fixed step drawn once before training (one
step for all, as Flower's side has one per worker process, so memory grows with K only by
what the engine keeps per institution).
Prints one JSON line with each round's seconds (the last round also evaluates).

    _fedsilo_round.py K N ROUNDS"""

import json
import sys

import numpy as np

from fedsilo.aggregation.build import build_aggregator
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.client.client import Client
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.transport.inprocess import InProcessTransport

K, N, ROUNDS = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
PLAIN = {"layer": "mean", "weighted": True}


STEP = np.random.default_rng(0).standard_normal(N, np.float32) * 0.01


class FixedStep:
    """A trainer whose 'training' adds the fixed step."""

    def fit(self, params, cfg, rng, reg=None):
        return {k: v + STEP for k, v in params.items()}, 100, {}

    def evaluate(self, params):
        return 1, {}


clients = {f"i{j:04d}": Client(f"i{j:04d}", FixedStep(), build_aggregator(PLAIN))
           for j in range(K)}
history = train(fedavg({"epochs": 1}, aggregator=build_aggregator(PLAIN)),
                InProcessTransport(clients), {"w": np.zeros(N, np.float32)},
                RunSettings("bench", 0, ROUNDS, evaluate_every=10**9))
print(json.dumps({"rounds_s": [e.seconds for e in history.events]}))
