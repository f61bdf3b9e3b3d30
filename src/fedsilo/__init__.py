"""fedsilo: federated learning across institutions.

The curated public API. Names load lazily (PEP 562): `import fedsilo` is cheap, and a run
imports only what it uses (a torch-only simulation never loads pandas or matplotlib).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "fedsilo.client.client",
    "FedsiloError": "fedsilo.errors",
    "InProcessTransport": "fedsilo.transport.inprocess",
    "LocalData": "fedsilo.data.local_data",
    "LocalStatistics": "fedsilo.data.preprocessing",
    "Params": "fedsilo.core.params",
    "PlainSum": "fedsilo.aggregation.sum",
    "Preprocessor": "fedsilo.data.preprocessing",
    "Reply": "fedsilo.core.messages",
    "RunConfig": "fedsilo.config.schema",
    "RunSettings": "fedsilo.engine.flow",
    "Schema": "fedsilo.data.schema",
    "ServerState": "fedsilo.algorithms.base",
    "SimulationResult": "fedsilo.simulation.run",
    "SklearnTrainer": "fedsilo.client.sklearn_trainer",
    "Strategy": "fedsilo.algorithms.base",
    "Task": "fedsilo.core.messages",
    "TaskKind": "fedsilo.core.messages",
    "TorchTrainer": "fedsilo.client.torch_trainer",
    "TrainConfig": "fedsilo.core.trainer",
    "WeightedMean": "fedsilo.aggregation.mean",
    "adam": "fedsilo.optim.adam",
    "fedadam": "fedsilo.algorithms.fedopt",
    "fedavg": "fedsilo.algorithms.fedavg",
    "fedavgm": "fedsilo.algorithms.fedopt",
    "fedsgd": "fedsilo.algorithms.fedavg",
    "load_config": "fedsilo.config.schema",
    "run_simulation": "fedsilo.simulation.run",
    "train": "fedsilo.engine.drivers",
    "sgd": "fedsilo.optim.sgd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedsilo' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from fedsilo.aggregation.mean import WeightedMean
    from fedsilo.aggregation.sum import PlainSum
    from fedsilo.algorithms.base import ServerState, Strategy
    from fedsilo.algorithms.fedavg import fedavg, fedsgd
    from fedsilo.algorithms.fedopt import fedadam, fedavgm
    from fedsilo.client.client import Client
    from fedsilo.client.sklearn_trainer import SklearnTrainer
    from fedsilo.client.torch_trainer import TorchTrainer
    from fedsilo.config.schema import RunConfig, load_config
    from fedsilo.core.messages import Reply, Task, TaskKind
    from fedsilo.core.params import Params
    from fedsilo.core.trainer import TrainConfig
    from fedsilo.data.local_data import LocalData
    from fedsilo.data.preprocessing import LocalStatistics, Preprocessor
    from fedsilo.data.schema import Schema
    from fedsilo.engine.drivers import train
    from fedsilo.engine.flow import RunSettings
    from fedsilo.errors import FedsiloError
    from fedsilo.optim.adam import adam
    from fedsilo.optim.sgd import sgd
    from fedsilo.simulation.run import SimulationResult, run_simulation
    from fedsilo.transport.inprocess import InProcessTransport
