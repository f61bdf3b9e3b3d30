"""Aggregation as composable layers (after TFF's aggregation factories).

A stack is built from the outside in, each wrapper taking an `inner` layer:
`WeightedMean(inner=PlainSum())` is FedAvg's aggregator; clipping, secure sums, noise and
compression stack on it without touching strategies.
"""

from fedsilo.aggregation.base import Accumulator, Layer
from fedsilo.aggregation.mean import WEIGHT_KEY, WeightedMean
from fedsilo.aggregation.sum import PlainSum

__all__ = ["WEIGHT_KEY", "Accumulator", "Layer", "PlainSum", "WeightedMean"]
