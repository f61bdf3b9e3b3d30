"""Client work by name: what an institution runs for a fit task (its `FitTask.work`).

Each algorithm's client half lives in its own module, next to its server rule
(`local_training` and `gradient` in fedavg.py, SCAFFOLD's in scaffold.py, FedNova's in
fednova.py, FedDyn's in feddyn.py); algorithms/registry.py lists them. This module is the
institutions' entry point: dispatch by name and the names of the side values a reply carries.
`state` is the institution's private state across rounds (it never leaves the institution).
"""

from __future__ import annotations

from fedsilo.algorithms.fedavg import (
    ClientHalf,
    ClientWork,
    WorkResult,
    gradient,
    local_training,
    model_delta,
)
from fedsilo.algorithms.registry import CLIENT_WORKS, aux_names, get_client_work
from fedsilo.core.side_values import CONTROL, NOVA_TAU

__all__ = ["CLIENT_WORKS", "CONTROL", "NOVA_TAU", "ClientHalf", "ClientWork",
           "WorkResult", "aux_names", "get_client_work", "gradient", "local_training",
           "model_delta"]
