"""Golden results: every strategy x protection x run mode on the heart-disease example, with
a fixed seed, small enough to rerun in a test. Shared by record.py (writes golden.json) and
test_golden.py (reruns each combination and compares bit for bit).

A combination's result is {"digest": SHA-256 of the final parameters, "history": per event
(round/version) the participants, rejections, federated and per-institution evaluation,
"metrics": per event the server's metrics} or, when the config or the run refuses it,
{"refused": "<exception type>: <message>", "stage": "config" | "run"}.

Floats are stored as JSON numbers (Python's repr: the shortest string that reads back to the
same double) and compared as float.hex(), so equality is bit-identical (NaN == NaN, -0.0 !=
0.0).
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsilo.config.schema import STRATEGIES, RunConfig, parse_config
from fedsilo.core.params import digest
from fedsilo.errors import FedsiloError
from fedsilo.simulation.run import run_simulation

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A frozen copy of examples/heart_disease/heart_disease.toml as of recording (an edit to the
# example must not move the golden results; only a change of code should).
BASE_TOML = """
[run]
name = "heart-disease"
seed = 42
rounds = 15

[data]
task = "binary"
target = "num"
positive_above = 0
columns = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
           "oldpeak", "slope", "ca", "thal", "num"]
categorical = ["cp", "restecg"]
exclude = ["slope", "ca", "thal"]
na_values = ["?"]
test_fraction = 0.34

[[data.institutions]]
name = "cleveland"
path = "data/processed.cleveland.data"

[[data.institutions]]
name = "hungary"
path = "data/processed.hungarian.data"

[[data.institutions]]
name = "switzerland"
path = "data/processed.switzerland.data"

[[data.institutions]]
name = "va-long-beach"
path = "data/processed.va.data"

[model]
kind = "logistic_regression"

[client]
steps = 100
batch_size = 4
lr = 0.01

[strategy]
name = "fedavg"
"""

ROOT = Path(__file__).resolve().parents[2]
HEART = ROOT / "examples" / "heart_disease"  # data paths below resolve against this folder
GOLDEN = Path(__file__).resolve().parent / "golden.json"

SEED = 7
ROUNDS = 3       # sync: rounds; async: model versions (commits)
STEPS = 10       # local SGD steps per task (the example's 100 is the slow part)
THRESHOLD = 2    # Shamir t for secagg(+); secure FedBuff needs buffer_size > t
BUFFER_SIZE = 3  # FedBuff buffer (every protection, so plain and secure runs match)

MODES = ("sync", "async")  # async = FedBuff / FedAsync under the simulation's virtual clock

# protection -> config sections merged over the base. The first three are the brief's;
# the others exercise the remaining aggregation paths of the round flow.
# Secure aggregation needs the categorical vocabularies declared (secure preprocessing), as
# in heart_disease_mlp.toml. DP noise comes from OS entropy (`secrets`) unless
# privacy.deterministic_noise, so the DP combinations set it: otherwise no two runs agree.
LEVELS = {"cp": [1, 2, 3, 4], "restecg": [0, 1, 2]}
DP = {"deterministic_noise": True}
PROTECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "plain": {},
    "secagg+": {"aggregation": {"secure": "secagg+", "threshold": THRESHOLD},
                "data": {"levels": LEVELS}},
    "central_dp": {"privacy": {"mode": "central", **DP}},
    "secagg": {"aggregation": {"secure": "secagg", "threshold": THRESHOLD},
               "data": {"levels": LEVELS}},
    "distributed_dp": {"aggregation": {"secure": "secagg+", "threshold": THRESHOLD},
                       "data": {"levels": LEVELS},
                       "privacy": {"mode": "distributed", **DP}},
    "median": {"aggregation": {"robust": "median", "byzantine": 0}},
    "trimmed_mean": {"aggregation": {"robust": "trimmed_mean", "trim_fraction": 0.25}},
    "krum": {"aggregation": {"robust": "krum", "byzantine": 0}},
    "multikrum": {"aggregation": {"robust": "multikrum", "byzantine": 0}},
}

# per strategy: hyper-parameters that make it train sensibly (as in tests/conformance)
STRATEGY_EXTRAS: dict[str, dict[str, Any]] = {
    "fedsgd": {"server_lr": 0.5},
    "fedadam": {"server_lr": 0.05},
    "fedyogi": {"server_lr": 0.05},
    "fedadagrad": {"server_lr": 0.3},
    "fedbuff": {"buffer_size": BUFFER_SIZE},
}

# async runs: unequal speeds and seeded network delays, so updates arrive stale and out of
# order (with equal speeds and fixed steps every reply would arrive at the same instant)
ASYNC_CLOCK = {"speeds": {"cleveland": 1.0, "hungary": 0.5, "switzerland": 2.0,
                          "va-long-beach": 0.7},
               "delay": "exponential", "delay_mean": 0.01}


def key(strategy: str, mode: str, protection: str) -> str:
    return f"{strategy}/{mode}/{protection}"


COMBOS: list[tuple[str, str, str]] = [(s, m, p) for s in STRATEGIES for m in MODES
                                      for p in PROTECTIONS]
KEYS = [key(*c) for c in COMBOS]


def build_config(strategy: str, mode: str, protection: str) -> RunConfig:
    """The heart-disease example (BASE_TOML), small: ROUNDS rounds, STEPS steps, no comparison.

    Raises:
        ConfigError: the config refuses the combination.
    """
    raw = tomllib.loads(BASE_TOML)
    raw["run"].update(seed=SEED, rounds=ROUNDS, evaluate_every=1, compare=False, mode=mode,
                      torch_threads=1)
    raw["client"].update(steps=STEPS)
    raw["strategy"] = {"name": strategy, **STRATEGY_EXTRAS.get(strategy, {})}
    if mode == "async":
        raw["clock"] = copy.deepcopy(ASYNC_CLOCK)
    for section, values in PROTECTIONS[protection].items():
        raw[section] = {**raw.get(section, {}), **copy.deepcopy(values)}
    return parse_config(raw, HEART, f"golden {key(strategy, mode, protection)}")


def _plain(x: Any) -> Any:
    """JSON-ready copy: tuples -> lists, numpy scalars/arrays -> Python, keys -> str."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)  # float32 -> float64 is exact
    return x


def _refusal(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_combo(strategy: str, mode: str, protection: str) -> dict[str, Any]:
    """Run one combination; its golden record (see the module docstring)."""
    try:
        cfg = build_config(strategy, mode, protection)
    except FedsiloError as e:
        return {"refused": _refusal(e), "stage": "config"}
    torch.set_num_threads(1)
    try:
        result = run_simulation(cfg, write=False)
    except FedsiloError as e:
        return {"refused": _refusal(e), "stage": "run"}
    history = result.history
    out: dict[str, Any] = {
        "digest": digest(history.params),
        "history": [_plain({"round": ev.round, "version": ev.version,
                            "participants": ev.participants, "rejected": ev.rejected,
                            "federated": ev.federated, "evaluation": ev.evaluation})
                    for ev in history.events],
        "metrics": [_plain(ev.metrics) for ev in history.events],
    }
    if mode == "async":  # simulated seconds (a synchronous round takes none)
        out["virtual_time"] = float(history.virtual_time)
    return out


def canonical(x: Any) -> Any:
    """For bit-identical comparison: every float as float.hex() (NaN equals NaN)."""
    if isinstance(x, dict):
        return {k: canonical(v) for k, v in x.items()}
    if isinstance(x, list):
        return [canonical(v) for v in x]
    if isinstance(x, float):
        return "nan" if math.isnan(x) else x.hex()
    return x


def dumps(records: Mapping[str, Any]) -> str:
    return json.dumps(records, indent=1, sort_keys=False, allow_nan=True) + "\n"


def load_golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())
