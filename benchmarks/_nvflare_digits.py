"""NVFlare side of the digits benchmark: NVIDIA FLARE 2.9's Job Recipe API (`FedAvgRecipe` for
PyTorch, the Client API script of _nvflare_digits_app.py) run by its simulator (`SimEnv`), in
NVFlare's own venv `.venv-nvflare` (run by simulation_digits.py; prints one JSON line).

Simulator settings: SimEnv's defaults, which NVFlare's docs recommend when resources allow:
one simulated site per client (`num_clients=K`) and as many threads as clients
(`num_threads=K`), so every site keeps its own worker process (the simulator starts one
`simulator_worker` process per thread) and the Client API runs in process
(`launch_external_process=False`, the recipe's default). Fewer threads than clients makes the
simulator start a new process for every task a site runs.

    _nvflare_digits.py K ROUNDS [federated|central] [THREADS]

THREADS (default K, SimEnv's default) below K trades memory for time: about 0.45 GB per worker
process here, so K = 100 with K threads needs some 45 GB.

Round times are the gaps between the server's stamps: the first at the controller's start,
then one after each round's aggregation (central: after the server's evaluation; federated:
the last one after the final "validate" task)."""

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

t0 = time.perf_counter()
import numpy as np  # noqa: E402
from _nvflare_digits_app import DigitsFedAvg, DigitsMLP  # noqa: E402
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe  # noqa: E402
from nvflare.recipe import SimEnv  # noqa: E402

HERE = Path(__file__).resolve().parent


class DigitsRecipe(FedAvgRecipe):
    """NVFlare's PyTorch FedAvg recipe with the stamping controller in place of FedAvg."""

    def __init__(self, *, k: int, workload: str, out: str, **kwargs: Any) -> None:
        self._bench = {"k": k, "workload": workload, "out": out}
        super().__init__(**kwargs)

    def _create_controller(self, persistor_id: str, model_params: Any,
                           model_aggregator: Any) -> DigitsFedAvg:
        plain = super()._create_controller(persistor_id, model_params, model_aggregator)
        return DigitsFedAvg(
            num_clients=plain.num_clients, num_rounds=plain.num_rounds,
            persistor_id=persistor_id, model=model_params, save_filename=plain.save_filename,
            aggregator=model_aggregator, task_name=plain.task_name, **self._bench)


def main() -> None:
    k, rounds = int(sys.argv[1]), int(sys.argv[2])
    workload = sys.argv[3] if len(sys.argv) > 3 else "federated"
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else k
    t_import = time.perf_counter() - t0
    logging.getLogger("nvflare").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="nvflare-digits-") as tmp:
        out = Path(tmp) / "stamps.json"
        recipe = DigitsRecipe(k=k, workload=workload, out=str(out), name="digits",
                              model=DigitsMLP(), min_clients=k, num_rounds=rounds,
                              train_script=str(HERE / "_nvflare_digits_app.py"),
                              train_args=f"{k} {workload}")
        t1 = time.perf_counter()
        recipe.execute(SimEnv(num_clients=k, num_threads=threads,
                              workspace_root=str(Path(tmp) / "ws")))
        wall = time.perf_counter() - t1
        got = json.loads(out.read_text())
    print(json.dumps({"engine": "nvflare", "workload": workload, "threads": threads, "wall_s": wall,
                      "import_s": t_import, "round_s": list(np.diff(got["stamps"])),
                      "accuracy": got["accuracy"]}))


if __name__ == "__main__":
    main()
