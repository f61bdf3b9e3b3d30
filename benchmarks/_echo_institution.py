"""An institution for the deployment benchmark: a real Client whose 'training' returns the
model unchanged (so the round measures transport and aggregation, not learning)."""

import sys

import numpy as np

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.client.client import Client
from fedsilo.transport.grpc.client import run_institution
from fedsilo.transport.grpc.tls import client_credentials


class Unchanged:
    def fit(self, params, cfg, rng, reg=None):
        return params, 100, {}

    def evaluate(self, params):
        return 1, {"accuracy": 1.0}


address, kit, name = sys.argv[1:4]
client = Client(name, Unchanged(), WeightedMean(PlainSum()))
run_institution(address, client.handle, client_credentials(kit), name=name, wait=5.0)
np.zeros(1)
