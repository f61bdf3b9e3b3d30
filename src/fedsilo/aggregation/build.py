"""Aggregator stacks from a JSON-able spec, so the server's stack and each institution's client
half are built by the same code from the same words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation.base import Layer
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.errors import ConfigError


def build_aggregator(spec: Mapping[str, Any], keys: Mapping[str, bytes] | None = None) -> Layer:
    """{"layer": "mean", "weighted": true, "secure": {...}?} -> WeightedMean(inner=sum), the
    sum being PlainSum or, with "secure", a secure sum (weights applied before masking).
    `keys` is local key material that never travels in a spec (the CKKS context)."""
    layer = spec.get("layer", "mean")
    if layer != "mean":
        raise ConfigError(f"aggregator layer '{layer}' is unknown; known: ['mean']")
    return WeightedMean(build_sum(spec.get("secure"), keys or {}),
                        weighted=bool(spec.get("weighted", True)))


def build_sum(secure: Mapping[str, Any] | None, keys: Mapping[str, bytes]) -> Layer:
    if not secure:
        return PlainSum()
    protocol = secure.get("protocol")
    if protocol == "ckks":
        from fedsilo.aggregation.secure.ckks import CKKSSum

        if "ckks" not in keys:
            raise ConfigError("aggregation.secure = 'ckks' needs the consortium's CKKS key "
                              "(provision the project with ckks = true)")
        return CKKSSum(keys["ckks"])
    if protocol in ("secagg+", "secagg"):
        from fedsilo.aggregation.secure.fixedpoint import FixedPoint
        from fedsilo.aggregation.secure.secaggplus import SecAggPlus

        neighbours = None if protocol == "secagg" else secure.get("neighbours")
        return SecAggPlus(int(secure["threshold"]), neighbours,
                          FixedPoint(int(secure.get("frac_bits", 24)),
                                     float(secure.get("max_abs", 2.0**30))))
    raise ConfigError(f"aggregation.secure '{protocol}' is unknown; known: ['secagg+', "
                      f"'secagg', 'ckks']")
