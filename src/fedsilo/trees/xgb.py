"""Gradient-boosted trees on XGBoost's own federated engine (`xgboost.federated`).

Every institution runs one XGBoost worker on its own rows; the workers join XGBoost's
federated server (the *tracker*) over gRPC with mutual TLS, which allreduces their gradient
histograms and quantile sketches, so every worker grows the same trees as one XGBoost on the
pooled rows (`tree_method = "hist"`). fedsilo writes no tree learner: it starts the tracker,
hands each worker its rank, and scores the result. What the tracker sees: every worker's
gradient histograms and quantile sketches, in the clear (docs/trees.md).

XGBoost's communicator is one per process, so each worker (and the tracker) runs in a process
of its own (trees/processes.py), also in a simulation where all institutions share one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.core.params import Params
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError, FedsiloError

BOOSTER = "booster"  # the model travels as one named array: XGBoost's JSON, as bytes
PROCESSES = "fedsilo.trees.processes"


def require_xgboost() -> Any:
    """The `xgboost` module, built with the federated communicator.

    Raises:
        ConfigError: not installed (the extra), or built without federated support.
    """
    try:
        import xgboost
        import xgboost.collective  # noqa: F401  (submodules the workers use)
        import xgboost.federated  # noqa: F401
    except ImportError:
        raise ConfigError("[model] kind = 'xgboost' needs XGBoost: pip install "
                          "'fedsilo[xgboost]'") from None
    if not xgboost.build_info().get("USE_FEDERATED"):
        raise ConfigError("this XGBoost was built without its federated communicator (the "
                          "xgboost-cpu wheel): install the full 'xgboost' wheel")
    return xgboost


def booster_params(spec: Mapping[str, Any], task: str, num_classes: int) -> dict[str, Any]:
    """XGBoost's parameters for a run: `[model.params]` over defaults for the task; `hist`
    trees, the run's seed, one thread (the same bits on every machine)."""
    objective = {"regression": "reg:squarederror", "binary": "binary:logistic",
                 "multiclass": "multi:softprob"}[task]
    params: dict[str, Any] = {"objective": objective, "tree_method": "hist", "nthread": 1,
                              "seed": int(spec.get("seed", 0)) % 2**31}
    if task == "multiclass":
        params["num_class"] = num_classes
    params.update(spec.get("params") or {})
    return params


@dataclass(frozen=True)
class TrackerTls:
    """The tracker's mutual-TLS files: its key and cert, and the CA its workers' certs
    must chain to (any other worker is refused at the TLS handshake)."""

    key: str
    cert: str
    ca: str


class Tracker:
    """XGBoost's federated server, as a process of its own (`python -m
    fedsilo.trees.processes tracker`) listening on `port`."""

    def __init__(self, workers: int, port: int, tls: TrackerTls | None,
                 timeout: int = 600) -> None:
        self.port = port
        args = ["tracker", str(workers), str(port), str(timeout)]
        if tls is not None:
            args += [tls.key, tls.cert, tls.ca]
        self._process = subprocess.Popen([sys.executable, "-m", PROCESSES, *args])

    def stop(self) -> None:
        """End the tracker (its workers are done: it keeps serving until told)."""
        if self._process.poll() is None:
            self._process.terminate()
        self._process.wait()


class BoostJob:
    """One institution's worker, running (`python -m fedsilo.trees.processes worker DIR`,
    its rows in DIR, a folder only this user may open): `__init__` returns at once (every
    institution's worker must run together), `result` waits for the trained model."""

    def __init__(self, data: LocalData, params: dict[str, Any], rounds: int, address: str,
                 world: int, rank: int, keys: Mapping[str, bytes] | None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="fedsilo-xgb-")
        folder = Path(self._folder.name)
        os.chmod(folder, 0o700)
        np.savez(folder / "rows.npz", x=data.x_train, y=data.y_train)
        job: dict[str, Any] = {"params": params, "rounds": rounds, "address": address,
                               "world": world, "rank": rank, "tls": None}
        if keys is not None:  # TLS asked: the kit's files, or a refusal (never the clear)
            try:
                job["tls"] = _tls_files(keys, folder)
            except ConfigError:
                self._folder.cleanup()
                raise
        (folder / "job.json").write_text(json.dumps(job))
        self._process = subprocess.Popen([sys.executable, "-m", PROCESSES, "worker",
                                          str(folder)])

    def result(self, timeout: float | None = None) -> bytes:
        """The model XGBoost trained (its JSON).

        Raises:
            FedsiloError: the worker failed (its error's type), or gave no model within
                `timeout` seconds (None: wait).
        """
        folder = Path(self._folder.name)
        try:
            self._process.wait(timeout)
            model, error = folder / "model.json", folder / "error.txt"
            if model.is_file():
                return model.read_bytes()
            kind = error.read_text() if error.is_file() else f"exit {self._process.returncode}"
            raise FedsiloError(f"XGBoost training failed here with {kind} (details in this "
                               f"institution's log)")
        except subprocess.TimeoutExpired:
            raise FedsiloError(f"the XGBoost worker gave no model within {timeout} s"
                               ) from None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker if it still runs; delete its folder (the rows, the key copy)."""
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait()
        self._folder.cleanup()


def _tls_files(keys: Mapping[str, bytes], folder: Path) -> dict[str, str]:
    """The kit's identity as files XGBoost can read (in the job's private folder)."""
    paths = {}
    for name, role in (("ca.pem", "ca"), ("client.key", "key"), ("client.pem", "cert")):
        if name not in keys:
            raise ConfigError(f"XGBoost over mutual TLS needs the kit's {name}")
        (folder / name).write_bytes(keys[name])
        paths[role] = str(folder / name)
    return paths


def load_booster(params: Params) -> Any:
    xgboost = require_xgboost()
    booster = xgboost.Booster()
    booster.load_model(bytearray(np.asarray(params[BOOSTER], np.uint8).tobytes()))
    return booster


def booster_array(model: bytes) -> np.ndarray:
    """The model as the named array that travels (and is checked: it must be JSON)."""
    try:
        json.loads(model)
    except ValueError:
        raise FedsiloError("the XGBoost model is not JSON") from None
    return np.frombuffer(model, np.uint8).copy()
