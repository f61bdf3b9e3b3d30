"""fedsilo: federated learning across institutions.

The curated public API. Everything else is importable from its module but may change.
"""

from fedsilo.aggregation import PlainSum, WeightedMean
from fedsilo.algorithms.base import ServerState, Strategy
from fedsilo.algorithms.fedavg import fedavg, fedsgd
from fedsilo.algorithms.fedopt import fedadam, fedavgm
from fedsilo.client.client import Client
from fedsilo.client.local_data import LocalData
from fedsilo.client.sklearn_trainer import SklearnTrainer
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.client.trainer import TrainConfig
from fedsilo.config.schema import RunConfig, load_config
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.core.params import Params
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.engine.sync_runner import RunSettings, run_sync
from fedsilo.errors import FedsiloError
from fedsilo.optim import adam, sgd
from fedsilo.simulation.run import SimulationResult, run_simulation
from fedsilo.transport.inprocess import InProcessTransport

__version__ = "0.1.0"

__all__ = [
    "Client",
    "FedsiloError",
    "InProcessTransport",
    "LocalData",
    "LocalStatistics",
    "Params",
    "PlainSum",
    "Preprocessor",
    "Reply",
    "RunConfig",
    "RunSettings",
    "Schema",
    "ServerState",
    "SimulationResult",
    "SklearnTrainer",
    "Strategy",
    "Task",
    "TaskKind",
    "TorchTrainer",
    "TrainConfig",
    "WeightedMean",
    "adam",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fedsgd",
    "load_config",
    "run_simulation",
    "run_sync",
    "sgd",
]
