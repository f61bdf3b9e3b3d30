"""Clip: bounds each institution's update in L2 norm (inside the institution, before weighting,
noise or masking), with a fixed norm or the adaptive quantile method of Andrew et al.,
"Differentially Private Learning with Adaptive Clipping", NeurIPS 2021.

Only the model update is clipped: the side values a client work declares (`declare_aux`) pass
unchanged, and do not count in the norm.

Adaptive: each institution also sends the bit 1[‖Δ‖ ≤ C]; the (noised) mean of the bits b̄
moves the norm geometrically towards the target quantile γ: C ← C · exp(−η (b̄ − γ)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator, Layer, aux_of
from fedsilo.core.params import ArraySpec, Params, ParamSpec, global_norm
from fedsilo.errors import ConfigError

CLIP_BIT = "__unclipped__"


class Clip:
    """Args: `norm` the (initial) clip norm C; `inner` the next layer; `target_quantile` γ and
    `learning_rate` η turn on adaptive clipping."""

    name = "clip"
    needs_individual_updates = False
    commutes_with_secure_sum = True  # clips inside the institution, before masking
    clips_each_update = True  # bounds one institution's contribution: the DP sensitivity C

    def __init__(self, norm: float, inner: Layer, target_quantile: float | None = None,
                 learning_rate: float = 0.2) -> None:
        if not norm > 0:
            raise ConfigError(f"clip: norm must be > 0, got {norm}")
        if target_quantile is not None and not 0 < target_quantile < 1:
            raise ConfigError(f"clip: target_quantile must be in (0, 1), got {target_quantile}")
        self.norm, self.inner = float(norm), inner
        self.target_quantile, self.learning_rate = target_quantile, learning_rate

    @property
    def adaptive(self) -> bool:
        return self.target_quantile is not None

    def init(self) -> dict[str, Any]:
        return {"norm": self.norm, "inner": self.inner.init()}

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return {**self.inner.client_config(state["inner"], round), "clip_norm": state["norm"]}

    def _with_bit(self, spec: ParamSpec) -> ParamSpec:
        return {**spec, CLIP_BIT: ArraySpec((1,), np.dtype(np.float64))} if self.adaptive else spec

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return self.inner.encoded_spec(self._with_bit(spec))

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        bound = float(config.get("clip_norm", self.norm))
        aux = aux_of(context)
        norm = global_norm({n: a for n, a in update.items() if n not in aux})
        factor = min(1.0, bound / norm) if norm > 0 else 1.0
        clipped = {n: a if n in aux else (a * factor).astype(a.dtype, copy=False)
                   for n, a in update.items()}
        if self.adaptive:
            clipped[CLIP_BIT] = np.array([1.0 if norm <= bound else 0.0])
        return self.inner.encode(clipped, num_examples, config, context)

    def zero(self, spec: ParamSpec) -> Accumulator:
        return self.inner.zero(self._with_bit(spec))

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        self.inner.accumulate(acc, encoded)

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        return self.inner.merge(a, b)

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        norm = state["norm"]
        inner_state, out, metrics = self.inner.finalize(with_clip_norm(state["inner"], norm),
                                                        acc)
        metrics = {**metrics, "clip_norm": norm}
        if self.adaptive:
            assert self.target_quantile is not None
            fraction = float(np.clip(out.pop(CLIP_BIT)[0], 0.0, 1.0))
            norm = norm * math.exp(-self.learning_rate * (fraction - self.target_quantile))
            metrics["unclipped_fraction"] = fraction
        return {"norm": norm, "inner": inner_state}, out, metrics


def with_clip_norm(state: Any, norm: float) -> Any:
    """The state handed to the layers below for one finalize, carrying this round's clip norm
    (the noise scales with it); layers below return their own state without it."""
    return {**state, "clip_norm": norm} if isinstance(state, dict) else state
