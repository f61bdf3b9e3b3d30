"""Aggregator stacks from a JSON-able spec, so the server's stack and each institution's client
half are built by the same code from the same words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.aggregation.base import Layer
from fedsilo.aggregation.dp.clipping import Clip
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.errors import ConfigError

ROBUST_RULES = ("median", "trimmed_mean", "krum", "multikrum")


def build_aggregator(spec: Mapping[str, Any], keys: Mapping[str, bytes] | None = None) -> Layer:
    """{"layer": "mean", "weighted": true, "secure": {...}?} -> WeightedMean(inner=sum), the
    sum being PlainSum or, with "secure", a secure sum (weights applied before masking).
    {"layer": "median" | "trimmed_mean" | "krum" | "multikrum", ...} -> a robust rule instead
    of the mean. "norm_bound": M wraps either in server-side norm bounding.
    `keys` is local key material that never travels in a spec (the identity that signs
    SecAgg+ keys and CKKS packages: ca.pem, client.key, client.pem)."""
    layer = spec.get("layer", "mean")
    if layer not in ("mean", *ROBUST_RULES):
        raise ConfigError(f"aggregator layer '{layer}' is unknown; known: "
                          f"{['mean', *ROBUST_RULES]}")
    _check_stack(spec)
    out = build_robust(spec) if layer != "mean" else build_mean(spec, keys or {})
    if spec.get("norm_bound") is not None:
        from fedsilo.aggregation.robust import NormBound

        out = NormBound(float(spec["norm_bound"]), out)
    elif default_bound(spec):  # a plain mean, unless "default_bound": false
        from fedsilo.aggregation.robust import MedianNormBound

        out = MedianNormBound(out)
    return out


def default_bound(spec: Mapping[str, Any]) -> bool:
    """Whether a stack gets the default bound (robust.MedianNormBound): a mean the server sees
    each update of (no secure sum), not already bounded by DP clipping or norm_bound, and not
    switched off."""
    return (spec.get("layer", "mean") == "mean" and not spec.get("secure")
            and not spec.get("privacy") and spec.get("norm_bound") is None
            and bool(spec.get("default_bound", True)))


def _check_stack(spec: Mapping[str, Any]) -> None:
    """Layers that need individual updates cannot sit above a secure sum (it hides them)."""
    clear = [k for k in ("norm_bound",) if spec.get(k) is not None]
    if spec.get("layer", "mean") != "mean":
        clear.insert(0, str(spec["layer"]))
    if clear and spec.get("secure"):
        raise ConfigError(f"aggregation: '{clear[0]}' needs each institution's update in the "
                          f"clear, and secure aggregation '{spec['secure'].get('protocol')}' "
                          f"hides them: choose one")
    if clear and spec.get("privacy"):
        raise ConfigError(f"aggregation: '{clear[0]}' with differential privacy is not "
                          f"supported (its sensitivity differs from the mean's)")


def build_robust(spec: Mapping[str, Any]) -> Layer:
    from fedsilo.aggregation.robust import CoordinateMedian, Krum, TrimmedMean

    layer = spec["layer"]
    if layer == "median":
        return CoordinateMedian()
    if layer == "trimmed_mean":
        return TrimmedMean(float(spec.get("trim_fraction", 0.1)))
    select = 1 if layer == "krum" else spec.get("select")
    return Krum(int(spec.get("byzantine", 1)), None if select is None else int(select))


def build_mean(spec: Mapping[str, Any], keys: Mapping[str, bytes]) -> Layer:
    total = build_sum(spec.get("secure"), keys)
    privacy = spec.get("privacy")
    if privacy:
        total = build_noise(privacy, total)
    mean: Layer = WeightedMean(total, weighted=bool(spec.get("weighted", True)))
    if privacy:
        mean = Clip(float(privacy["clip_norm"]), mean, privacy.get("target_quantile"),
                    float(privacy.get("clip_learning_rate", 0.2)))
    return mean


def build_noise(p: Mapping[str, Any], inner: Layer) -> Layer:
    """Central (server adds) or distributed (each institution adds a share) Gaussian noise.
    With adaptive clipping the update noise is raised so that update and clip-bit releases
    together cost the configured multiplier z (Andrew et al. 2021, Thm. 1):
    z_update = (z^-2 - (2 σ_b)^-2)^(-1/2)."""
    from fedsilo.aggregation.dp.accountant import Accountant
    from fedsilo.aggregation.dp.noise import GaussianNoise, NoiseShare

    z, bit = float(p["noise_multiplier"]), float(p.get("bit_stddev", 0.0))
    multiplier = z
    if p.get("target_quantile") is not None:
        if not 2 * bit > z:
            raise ConfigError(f"privacy: adaptive clipping needs 2·clip_count_stddev > "
                              f"noise_multiplier ({2 * bit} <= {z})")
        multiplier = (z**-2 - (2 * bit) ** -2) ** -0.5
    accountant = Accountant.public_cohort(z, float(p["delta"]))
    seed, norm = p.get("deterministic"), float(p["clip_norm"])
    if p["mode"] == "central":
        return GaussianNoise(multiplier, inner, accountant, bit, seed, norm)
    if p["mode"] == "distributed":
        return NoiseShare(multiplier, int(p["min_contributors"]), inner, accountant, bit, seed,
                          norm)
    raise ConfigError(f"privacy.mode '{p['mode']}' has no aggregation layer")


def build_sum(secure: Mapping[str, Any] | None, keys: Mapping[str, bytes]) -> Layer:
    if not secure:
        return PlainSum()
    protocol = secure.get("protocol")
    if protocol == "ckks":
        from fedsilo.aggregation.secure.ckks import CKKSSum

        # keys: identity material only; each round's CKKS key is made by an institution
        return CKKSSum(int(secure.get("min_contributors", 2)), keys)
    if protocol in ("secagg+", "secagg"):
        from fedsilo.aggregation.secure.fixedpoint import FixedPoint
        from fedsilo.aggregation.secure.secaggplus import SecAggPlus

        neighbours = None if protocol == "secagg" else secure.get("neighbours")
        return SecAggPlus(int(secure["threshold"]), neighbours,
                          FixedPoint(int(secure.get("frac_bits", 24)),
                                     float(secure.get("max_abs", 2.0**30)),
                                     int(secure.get("ring_bits", 64))), keys)
    raise ConfigError(f"aggregation.secure '{protocol}' is unknown; known: ['secagg+', "
                      f"'secagg', 'ckks']")
