"""NVFlare 2.9 pieces of the digits benchmark (run by _nvflare_digits.py in `.venv-nvflare`):

- `DigitsFedAvg`: NVFlare's own FedAvg controller (InTime weighted aggregation, the model
  saved every round as its recipe does), plus the benchmark's stamps, written to a JSON file:
  "central" evaluates each new global model on the pooled test splits on the server;
  "federated" sends the final model as a "validate" task to every client after the last round.
- run as a script: the Client API training loop of every site (`flare.receive()` /
  `flare.send()`), with the same model, partition, epochs, batch and lr as the other engines.
  In the federated workload each site evaluates the global model it receives from round 1 on
  (the model of the previous round, NVFlare's usual place for it) and the final model in the
  "validate" task: every institution evaluates models 1..R, as fedsilo's and Flower's do.

    _nvflare_digits_app.py K WORKLOAD     (as the recipe's train_script)
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import torch
from digits_task import WORKLOADS, accuracy, local_sgd, make_mlp, partitions, pooled_test
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.fedavg import FedAvg


class DigitsMLP(torch.nn.Sequential):
    """digits_task's MLP (same layers, same seed) as a class NVFlare's persistor can rebuild."""

    def __init__(self) -> None:
        super().__init__(*make_mlp().children())


class DigitsFedAvg(FedAvg):
    """FedAvg that stamps each round's end and evaluates as the workload says."""

    def __init__(self, *args: Any, k: int = 1, workload: str = "federated", out: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.k, self.workload, self.out = k, workload, out
        self._stamps: list[float] = []
        self._latest: FLModel | None = None
        self._accuracy: float | None = None

    def run(self) -> None:
        self._stamps = [time.perf_counter()]
        self._eval = make_mlp()
        self._x, self._y = pooled_test(partitions(self.k))
        super().run()
        if self.workload == "federated" and self._latest is not None:
            replies = self.send_model_and_wait(task_name="validate", data=self._latest)
            n = [r.metrics["n"] for r in replies]
            self._accuracy = float(np.average([r.metrics["accuracy"] for r in replies],
                                              weights=n))
            self._stamps[-1] = time.perf_counter()  # the last round ends with its evaluation
        with open(self.out, "w") as f:
            json.dump({"stamps": self._stamps, "accuracy": self._accuracy,
                       "replies": len(self._stamps) - 1}, f)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        model = super().update_model(model, aggr_result)
        self._latest = model
        if self.workload == "central":
            self._eval.load_state_dict({k: torch.as_tensor(v) for k, v in model.params.items()})
            self._accuracy = accuracy(self._eval, self._x, self._y)
        self._stamps.append(time.perf_counter())
        return model


def client(k: int, workload: str) -> None:
    """One site's Client API loop (NVFlare runs it in a thread of the site's process)."""
    import nvflare.client as flare

    epochs, batch, _ = WORKLOADS[workload]
    torch.set_num_threads(1)
    flare.init()
    site = int(flare.get_site_name().rsplit("-", 1)[1]) - 1  # site-1 .. site-K
    xtr, ytr, xte, yte = partitions(k)[site]
    model = make_mlp()
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        model.load_state_dict({key: torch.as_tensor(v) for key, v in received.params.items()})
        if flare.is_evaluate():
            flare.send(FLModel(metrics={"accuracy": accuracy(model, xte, yte), "n": len(yte)}))
            continue
        metrics = {}
        if workload == "federated" and (received.current_round or 0) > 0:
            metrics = {"accuracy": accuracy(model, xte, yte)}
        local_sgd(model, xtr, ytr, epochs, batch)
        flare.send(FLModel(params=model.state_dict(),
                           metrics=metrics, meta={"NUM_STEPS_CURRENT_ROUND": len(ytr)}))


if __name__ == "__main__":
    client(int(sys.argv[1]), sys.argv[2])
