"""XGBoost's processes: `python -m fedsilo.trees.processes tracker WORKERS PORT TIMEOUT [KEY
CERT CA]` runs the federated server; `... worker DIR` trains one institution's rows
(DIR/rows.npz, DIR/job.json) and writes DIR/model.json, or DIR/error.txt with the error's
type only (its text may quote data; it goes to this process's stderr, the institution's log).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np


def tracker(workers: int, port: int, timeout: int, tls: list[str]) -> None:
    import xgboost.federated

    paths = (dict(zip(("server_key_path", "server_cert_path", "client_cert_path"), tls))
             if tls else {})
    xgboost.federated.run_federated_server(workers, port, timeout=timeout, **paths)


def worker(folder: Path) -> None:
    """Optional job.json keys: "data_split_mode" ("row", the default, or "col": this worker
    holds its own columns of the same rows, XGBoost's vertical mode; rows.npz then holds "y"
    only at the label holder, rank 0) and "predict" (true: no training; load DIR/model.json,
    predict DIR/rows.npz's rows together with the other workers and write DIR/predictions.npy).
    """
    import xgboost
    import xgboost.collective
    from xgboost.core import DataSplitMode

    job: dict[str, Any] = json.loads((folder / "job.json").read_text())
    with np.load(folder / "rows.npz", allow_pickle=False) as rows:
        x, y = rows["x"], (rows["y"] if "y" in rows.files else None)
    split = {"row": DataSplitMode.ROW, "col": DataSplitMode.COL}[job.get("data_split_mode",
                                                                          "row")]
    args: dict[str, Any] = {"dmlc_communicator": "federated",
                            "federated_server_address": job["address"],
                            "federated_world_size": job["world"],
                            "federated_rank": job["rank"]}
    if job["tls"]:
        args.update(federated_server_cert_path=job["tls"]["ca"],
                    federated_client_key_path=job["tls"]["key"],
                    federated_client_cert_path=job["tls"]["cert"])
    with xgboost.collective.CommunicatorContext(**args):
        matrix = xgboost.DMatrix(x, label=y, data_split_mode=split)
        if job.get("predict"):
            booster = xgboost.Booster(params={"nthread": job["params"].get("nthread", 1)})
            booster.load_model(bytearray((folder / "model.json").read_bytes()))
            np.save(folder / "predictions.npy", booster.predict(matrix))
            return
        booster = xgboost.train(job["params"], matrix, job["rounds"])
        (folder / "model.json").write_bytes(bytes(booster.save_raw("json")))


def main(argv: list[str]) -> int:
    role, *rest = argv
    if role == "tracker":
        tracker(int(rest[0]), int(rest[1]), int(rest[2]), rest[3:])
        return 0
    folder = Path(rest[0])
    try:
        worker(folder)
    except Exception as e:  # noqa: BLE001  (the type leaves; the text stays in the log)
        traceback.print_exc()
        (folder / "error.txt").write_text(type(e).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
