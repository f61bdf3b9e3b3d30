"""Aggregator stacks from a JSON-able spec, so the server's stack and each institution's client
half are built by the same code from the same words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation.base import Layer
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.errors import ConfigError


def build_aggregator(spec: Mapping[str, Any]) -> Layer:
    """{"layer": "mean", "weighted": true} -> WeightedMean(PlainSum(), weighted=True)."""
    layer = spec.get("layer", "mean")
    if layer == "mean":
        return WeightedMean(PlainSum(), weighted=bool(spec.get("weighted", True)))
    raise ConfigError(f"aggregator layer '{layer}' is unknown; known: ['mean']")
