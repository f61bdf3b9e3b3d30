"""Server optimizers as pure (init, update) pairs applied to the aggregated pseudo-gradient."""

from fedsilo.optim.adam import adam
from fedsilo.optim.adaptive import adagrad, yogi
from fedsilo.optim.base import OptState, ServerOptimizer, apply_step
from fedsilo.optim.sgd import sgd

__all__ = ["OptState", "ServerOptimizer", "adagrad", "adam", "apply_step", "sgd", "yogi"]
