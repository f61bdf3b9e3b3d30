"""NVFlare side of the deployment round (run by deployment_round.py in `.venv-nvflare`; prints
one JSON line): NVIDIA FLARE 2.9's POC deployment, as `nvflare poc prepare -n 4` +
`nvflare poc start` make it (the recipe API's `PocEnv(num_clients=4)` runs both): a provisioned
project with its certificates, one server and 4 client processes on loopback, each job run in
its own processes; the job is submitted through the admin API as the project admin.

The job: `NumpyFedAvgRecipe` (NVFlare's FedAvg controller, InTime aggregation, the model
saved every round), the model one float32 array of N zeros loaded from a .npy checkpoint,
each site's Client API script returning the model unchanged (_nvflare_round_app.py).

    _nvflare_round.py N ROUNDS

Round times are the gaps between the server's stamps after each round's update (the first
from the controller's start, which includes the sites picking up the job)."""

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="nvflare-round-") as tmp:
        os.environ["NVFLARE_POC_WORKSPACE"] = str(Path(tmp) / "poc")  # read by PocEnv
        from _nvflare_round_app import RoundFedAvg
        from nvflare.app_common.np.recipes.fedavg import NumpyFedAvgRecipe
        from nvflare.recipe import PocEnv

        class RoundRecipe(NumpyFedAvgRecipe):
            """NVFlare's NumPy FedAvg recipe with the stamping controller in FedAvg's place."""

            def _create_controller(self, persistor_id: str, model_params: Any,
                                   model_aggregator: Any) -> RoundFedAvg:
                plain = super()._create_controller(persistor_id, model_params, model_aggregator)
                return RoundFedAvg(
                    num_clients=plain.num_clients, num_rounds=plain.num_rounds,
                    persistor_id=persistor_id, model=model_params,
                    save_filename=plain.save_filename, aggregator=model_aggregator,
                    task_name=plain.task_name, out=str(out))

        logging.getLogger("nvflare").setLevel(logging.WARNING)
        out = Path(tmp) / "stamps.json"
        ckpt = Path(tmp) / "zeros.npy"
        np.save(ckpt, np.zeros(n, np.float32))
        recipe = RoundRecipe(name=f"round{n}", initial_ckpt=str(ckpt), min_clients=4,
                             num_rounds=rounds,
                             train_script=str(HERE / "_nvflare_round_app.py"))
        run = recipe.execute(PocEnv(num_clients=4))
        status = run.get_result(timeout=1800)  # waits for the job, then stops POC
        if not out.exists():
            raise SystemExit(f"the NVFlare job wrote no stamps (result: {status}, "
                             f"status: {run.get_status()})")
        stamps = json.loads(out.read_text())["stamps"]
    print(json.dumps({"engine": "nvflare", "n": n, "round_s": list(np.diff(stamps))}))


if __name__ == "__main__":
    main()
