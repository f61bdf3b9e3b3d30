"""NVFlare 2.9 pieces of the deployment round (run by _nvflare_round.py in `.venv-nvflare`):

- `RoundFedAvg`: NVFlare's own FedAvg controller (InTime weighted aggregation, the model
  saved every round as its recipe does) that stamps the end of each round into a JSON file;
- run as a script: each site's Client API loop, which returns the model unchanged (so the
  round measures transport and aggregation, as fedsilo's and Flower's echo institutions do).

    _nvflare_round_app.py     (as the recipe's train_script)
"""

from __future__ import annotations

import json
import time
from typing import Any

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.fedavg import FedAvg


class RoundFedAvg(FedAvg):
    """FedAvg that writes the time at its start and after each round's update to `out`."""

    def __init__(self, *args: Any, out: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = out
        self._stamps: list[float] = []

    def run(self) -> None:
        self._stamps = [time.perf_counter()]
        super().run()
        with open(self.out, "w") as f:
            json.dump({"stamps": self._stamps}, f)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        model = super().update_model(model, aggr_result)
        self._stamps.append(time.perf_counter())
        return model


def echo() -> None:
    """A site that sends back the model it receives."""
    import nvflare.client as flare

    flare.init()
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        flare.send(FLModel(params=received.params, meta={"NUM_STEPS_CURRENT_ROUND": 100}))


if __name__ == "__main__":
    echo()
