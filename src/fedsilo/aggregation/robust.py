"""Robust aggregation against faulty or malicious institutions (Byzantine robustness).

Each rule replaces the weighted mean; they need every update in the clear, so they keep all
of a round's updates (memory O(K × model)) and cannot sit above a secure sum. They ignore the
example counts institutions claim (a liar could claim a million rows). With K updates of
which f are bad:

- `CoordinateMedian`: per coordinate median (Yin et al., ICML 2018); tolerates f < K/2.
- `TrimmedMean(beta)`: per coordinate, drop the ⌊βK⌋ largest and smallest values, average the
  rest (Yin et al. 2018); tolerates f ≤ ⌊βK⌋.
- `Krum(f, m)`: score each update by the summed squared distances to its K - f - 2 nearest
  others; Krum keeps the best one, multi-Krum averages the m best (Blanchard et al., NeurIPS
  2017); needs K ≥ 2f + 3.
- `NormBound(M, inner)`: scales every received update to L2 norm ≤ M before the inner layer
  (Sun et al. 2019); it does not remove bad updates but bounds what each can do.
- `MedianNormBound(inner)`: the default when no rule is configured: with K ≥ 4 updates,
  each one above 5 × the median norm of the round's updates is scaled down to that bound. The
  median is what fewer than half of the updates cannot move, so no single institution can
  move the model further than 5 median updates' worth times its weight; honest rounds, even
  non-IID ones (heart disease: up to 3.9 × the median), are left untouched, their result the
  plain mean's bit for bit. It bounds an attacker, it does not remove one: against a
  persistent one, choose a robust rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator, Delegating, Layer, ServerOnly
from fedsilo.aggregation.mean import WEIGHT_KEY, rescaled
from fedsilo.core.params import Params, ParamSpec
from fedsilo.errors import AggregationError, ConfigError


class _KeepsAll(ServerOnly):
    """Server half that keeps every update until finalize; client half passes through."""

    name = "robust"
    needs_individual_updates = True
    commutes_with_secure_sum = False

    def zero(self, spec: ParamSpec) -> Accumulator:
        return Accumulator({}, 0, {"updates": []})

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        acc.extra["updates"].append(encoded)
        acc.count += 1

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        a.extra["updates"].extend(b.extra["updates"])
        a.count += b.count
        return a

    def _updates(self, acc: Accumulator) -> list[Params]:
        if not acc.extra["updates"]:
            raise AggregationError(f"{self.name}: no update was received this round")
        return list(acc.extra["updates"])


def _stack(updates: list[Params], name: str) -> np.ndarray:
    return np.stack([u[name] for u in updates])


def raw_norm(encoded: Params) -> float:
    """L2 norm of an update as its institution computed it: above a weighted mean, the
    weighted entries divided by the weight (the weight entry itself left out)."""
    weight = float(encoded[WEIGHT_KEY][0]) if WEIGHT_KEY in encoded else 1.0
    return float(np.sqrt(sum(float(np.vdot(a, a)) for n, a in encoded.items()
                             if n != WEIGHT_KEY))) / weight


class CoordinateMedian(_KeepsAll):
    """Coordinate-wise median of the updates."""

    name = "median"

    def tolerates(self, k: int) -> int:
        return (k - 1) // 2

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        updates = self._updates(acc)
        out = {n: np.median(_stack(updates, n), axis=0).astype(a.dtype)
               for n, a in updates[0].items()}
        return state, out, {"received": float(len(updates)),
                            "tolerates": float(self.tolerates(len(updates)))}


class TrimmedMean(_KeepsAll):
    """Coordinate-wise β-trimmed mean.

    Args:
        beta: fraction trimmed at each end, in [0, 0.5).
    """

    name = "trimmed_mean"

    def __init__(self, beta: float) -> None:
        if not 0.0 <= beta < 0.5:
            raise ConfigError(f"trimmed_mean: trim fraction must be in [0, 0.5), got {beta}")
        self.beta = beta

    def tolerates(self, k: int) -> int:
        return int(np.floor(self.beta * k))

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        updates = self._updates(acc)
        k, cut = len(updates), self.tolerates(len(updates))
        out = {}
        for n, a in updates[0].items():
            ordered = np.sort(_stack(updates, n), axis=0)
            out[n] = ordered[cut:k - cut].mean(axis=0).astype(a.dtype)
        return state, out, {"received": float(k), "trimmed_each_side": float(cut),
                            "tolerates": float(cut)}


class Krum(_KeepsAll):
    """Krum (`select` = 1) and multi-Krum (`select` = m > 1).

    Args:
        byzantine: f, the number of bad updates to withstand.
        select: how many best-scored updates to average (None: K - f).
    """

    name = "krum"

    def __init__(self, byzantine: int, select: int | None = 1) -> None:
        if byzantine < 0:
            raise ConfigError(f"krum: byzantine (f) must be >= 0, got {byzantine}")
        if select is not None and select < 1:
            raise ConfigError(f"krum: select (m) must be >= 1, got {select}")
        self.f = byzantine
        self.select = select

    def tolerates(self, k: int) -> int:
        return min(self.f, max((k - 3) // 2, 0))

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        updates = self._updates(acc)
        k = len(updates)
        if k < 2 * self.f + 3:
            raise AggregationError(f"krum: {k} updates cannot withstand f={self.f} bad ones "
                                   f"(needs at least 2f+3 = {2 * self.f + 3})")
        scores = self.scores(updates)
        m = self.select if self.select is not None else k - self.f
        chosen = np.argsort(scores, kind="stable")[:min(m, k)]
        out = {n: np.mean(_stack([updates[i] for i in chosen], n), axis=0).astype(a.dtype)
               for n, a in updates[0].items()}
        return state, out, {"received": float(k), "selected": float(len(chosen)),
                            "tolerates": float(self.tolerates(k))}

    def scores(self, updates: list[Params]) -> np.ndarray:
        """Sum of squared distances from each update to its K - f - 2 nearest others."""
        flat = np.stack([np.concatenate([np.ravel(u[n]).astype(np.float64) for n in sorted(u)])
                         for u in updates])
        sq = np.einsum("ij,ij->i", flat, flat)
        dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
        np.fill_diagonal(dist, np.inf)
        nearest = len(updates) - self.f - 2
        return np.sort(dist, axis=1)[:, :nearest].sum(axis=1)


class NormBound(Delegating):
    """Scales each received update to L2 norm at most `max_norm` (server side), then passes
    it to `inner`. Above a weighted mean it bounds the unweighted update (Σ w u / w).

    Args:
        max_norm: M > 0.
        inner: the layer that aggregates the bounded updates.
    """

    name = "norm_bound"
    needs_individual_updates = True
    commutes_with_secure_sum = False

    def __init__(self, max_norm: float, inner: Layer) -> None:
        if not max_norm > 0:
            raise ConfigError(f"norm_bound: max_norm must be > 0, got {max_norm}")
        self.max_norm = float(max_norm)
        self.inner = inner

    def zero(self, spec: ParamSpec) -> Accumulator:
        acc = self.inner.zero(spec)
        acc.extra["bounded"] = 0
        return acc

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        norm = raw_norm(encoded)
        if norm > self.max_norm:
            encoded = rescaled(encoded, self.max_norm / norm)
            acc.extra["bounded"] += 1
        self.inner.accumulate(acc, encoded)

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        return merge_keeping(self.inner, a, b, "bounded")

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        state, agg, metrics = self.inner.finalize(state, acc)
        return state, agg, {**metrics, "norm_bounded": float(acc.extra["bounded"])}


def merge_keeping(inner: Layer, a: Accumulator, b: Accumulator, key: str) -> Accumulator:
    """`inner`'s merge of two accumulators, with this layer's extra `key` (a count or a list)
    of both carried over."""
    kept = a.extra[key] + b.extra[key]
    out = inner.merge(a, b)
    out.extra[key] = kept
    return out


class MedianNormBound(Delegating):
    """The default bound (server side): with at least `min_updates` updates, those above
    `multiple` × the median update norm are scaled down to it, then all are passed to `inner`
    in the order they arrived. It keeps the round's updates until `finalize` (memory
    K × model, as the robust rules); with fewer updates it bounds nothing. The norm is that of
    the whole reply (as NormBound's): FedNova's a_i entry, much larger than its normalised
    delta, dominates it, so there the bound caps a_i rather than the delta.

    Args:
        inner: the layer that aggregates the bounded updates (a weighted mean).
        multiple: the bound in medians (> 1).
        min_updates: the fewest updates for which the median says anything (K ≥ 4: with 3,
            one institution could already be a third of the evidence).
    """

    name = "default_bound"
    needs_individual_updates = True
    commutes_with_secure_sum = False

    def __init__(self, inner: Layer, multiple: float = 5.0, min_updates: int = 4) -> None:
        if not multiple > 1:
            raise ConfigError(f"default bound: multiple must be > 1, got {multiple}")
        self.inner, self.multiple, self.min_updates = inner, float(multiple), min_updates

    def zero(self, spec: ParamSpec) -> Accumulator:
        acc = self.inner.zero(spec)
        acc.extra["held"] = []
        return acc

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        acc.extra["held"].append(encoded)

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        return merge_keeping(self.inner, a, b, "held")

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        held, acc.extra["held"] = acc.extra["held"], []
        norms = [raw_norm(u) for u in held]
        bound = (self.multiple * float(np.median(norms)) if len(held) >= self.min_updates
                 else np.inf)
        bounded = 0
        for update, norm in zip(held, norms):
            if norm > bound:
                update = rescaled(update, bound / norm)
                bounded += 1
            self.inner.accumulate(acc, update)
        state, agg, metrics = self.inner.finalize(state, acc)
        extra = {"default_bound": bound, "default_bounded": float(bounded)} if np.isfinite(
            bound) else {}
        return state, agg, {**metrics, **extra}
