"""Gaussian noise on the sum of clipped updates.

- GaussianNoise (central DP): the server adds N(0, σ²) to every coordinate of the sum, with
  σ = z · C (noise multiplier × clip norm), after the inner sum is formed (and, with secure
  aggregation, unmasked).
- NoiseShare (distributed DP, for secure aggregation): each institution adds N(0, σ²/m) to its
  own clipped update before masking, m = the minimum number of contributors; the server only
  ever sees the sum, which carries at least N(0, σ²) when m or more institutions contribute.
  The guarantee is computed for that σ (a conservative bound when more contribute); a sum of
  fewer than m shares is never revealed: the round aborts before the secure sum's unmasking
  (or decryption) stage.

Only the model update (and the clip bit) is noised: the aggregation weight and the side
values of the client work (`Accumulator.aux` on the server, `declare_aux` in an institution)
are summed as they are. The adaptive-clipping bit gets its own noise σ_b.
Noise is drawn from numpy's PCG64 seeded with 128 bits from `secrets` (OS entropy), freshly
for every release, unless `deterministic` (a run seed, for experiments) derives it from that
seed: then whoever knows the seed can subtract it.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator, Layer, aux_of, find_staged
from fedsilo.aggregation.dp.accountant import Accountant
from fedsilo.aggregation.dp.clipping import CLIP_BIT
from fedsilo.aggregation.mean import WEIGHT_KEY
from fedsilo.core.params import Params, ParamSpec
from fedsilo.core.rng import generator
from fedsilo.errors import ConfigError, SecureAggregationAborted


def _rng(deterministic: int | None, *key: str | int) -> np.random.Generator:
    if deterministic is None:
        return np.random.default_rng(secrets.randbits(128))
    return generator(deterministic, *key)


def _noised(values: Params, stddev: float, bit_stddev: float, rng: np.random.Generator,
            aux: frozenset[str] = frozenset()) -> Params:
    """`values` plus Gaussian noise, except the weight and the side values `aux`."""
    out = {}
    for name, a in values.items():
        if name == WEIGHT_KEY or name in aux:
            out[name] = a
            continue
        sd = bit_stddev if name == CLIP_BIT else stddev
        noise = rng.normal(0.0, sd, a.shape) if sd > 0 else 0.0
        out[name] = (a + noise).astype(a.dtype, copy=False)
    return out


class _Passthrough:
    inner: Layer

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return self.inner.client_config(state["inner"], round)

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return self.inner.encoded_spec(spec)

    def zero(self, spec: ParamSpec) -> Accumulator:
        return self.inner.zero(spec)

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        self.inner.accumulate(acc, encoded)

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        return self.inner.merge(a, b)

    def init(self) -> dict[str, Any]:
        return {"releases": 0, "inner": self.inner.init()}


class GaussianNoise(_Passthrough):
    """Central DP: σ = `multiplier` × the round's clip norm on the sum (the Clip layer above
    hands it down in the state it finalizes with), σ_b = `bit_stddev` on the clip bits."""

    name = "central_noise"
    needs_individual_updates = False
    commutes_with_secure_sum = True  # noises the (unmasked) sum only
    adds_dp_noise = True

    def __init__(self, multiplier: float, inner: Layer, accountant: Accountant | None = None,
                 bit_stddev: float = 0.0, deterministic: int | None = None,
                 clip_norm: float = 1.0) -> None:
        if not multiplier >= 0:
            raise ConfigError(f"noise: multiplier must be >= 0, got {multiplier}")
        self.multiplier, self.bit_stddev, self.inner = multiplier, bit_stddev, inner
        self.accountant, self.deterministic, self.clip_norm = accountant, deterministic, clip_norm

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        return self.inner.encode(update, num_examples, config, context)

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        inner_state, sums, metrics = self.inner.finalize(state["inner"], acc)
        releases = state["releases"] + 1
        stddev = self.multiplier * float(state.get("clip_norm", self.clip_norm))
        rng = _rng(self.deterministic, releases, "central-noise")
        out = _noised(sums, stddev, self.bit_stddev, rng, acc.aux)
        return ({"releases": releases, "inner": inner_state}, out,
                {**metrics, **privacy_metrics(self.accountant, releases, stddev)})


class NoiseShare(_Passthrough):
    """Distributed DP: each institution adds N(0, σ²/m) to its update before the inner
    (secure) sum, σ = `multiplier` × the round's clip norm; `shares` = m, the minimum number
    of contributors.

    The secure sum's stages (`secure`, found below) run through this layer, so that a sum of
    fewer than m shares is never revealed: SecureAggregationAborted (the round is not
    committed) instead of the requests to unmask or decrypt it."""

    name = "noise_share"
    needs_individual_updates = False
    commutes_with_secure_sum = True  # each share is added inside the institution, before masking
    hides_individual_updates = False  # the secure sum below does (stages are handed to it)
    adds_dp_noise = True
    noises_each_update = True

    def __init__(self, multiplier: float, shares: int, inner: Layer,
                 accountant: Accountant | None = None, bit_stddev: float = 0.0,
                 deterministic: int | None = None, clip_norm: float = 1.0) -> None:
        if shares < 1:
            raise ConfigError(f"noise share: shares must be >= 1, got {shares}")
        self.multiplier, self.shares, self.bit_stddev = multiplier, shares, bit_stddev
        self.inner, self.accountant, self.deterministic = inner, accountant, deterministic
        self.clip_norm = clip_norm
        self.secure: Any = find_staged(inner)  # SecAgg+ or CKKS; None under a plain sum

    def __getattr__(self, attr: str) -> Any:
        """The rest of the secure sum's stage protocol (pre_stages, post_stages, begin,
        stage_collect, stage_respond, ...) is the secure sum's own; without a secure sum this
        layer has none, and find_staged looks further down."""
        secure = self.__dict__.get("secure")
        if secure is None or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(secure, attr)

    def stage_requests(self, stage: str, acc: Accumulator,
                       alive: list[str]) -> dict[str, dict[str, Any]]:
        if stage in self.secure.post_stages:  # the stages that reveal the sum
            self._check_shares(len(alive))
        return dict(self.secure.stage_requests(stage, acc, alive))

    def _check_shares(self, contributions: int) -> None:
        if contributions < self.shares:
            raise SecureAggregationAborted(
                f"distributed DP: {contributions} contributions carry {contributions} of the "
                f"{self.shares} noise shares the privacy guarantee is accounted for "
                f"(min_contributors); their sum is not revealed")

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        scale = 1.0 / math.sqrt(self.shares)
        stddev = self.multiplier * float(config.get("clip_norm", self.clip_norm))
        rng = _rng(self.deterministic, str(context.get("me", "")), int(context.get("round", 0)),
                   "noise-share")
        noisy = _noised(update, stddev * scale, self.bit_stddev * scale, rng, aux_of(context))
        return self.inner.encode(noisy, num_examples, config, context)

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        self._check_shares(acc.count)
        inner_state, sums, metrics = self.inner.finalize(state["inner"], acc)
        releases = state["releases"] + 1
        stddev = self.multiplier * float(state.get("clip_norm", self.clip_norm))
        return ({"releases": releases, "inner": inner_state}, sums,
                {**metrics, **privacy_metrics(self.accountant, releases, stddev)})


def privacy_metrics(accountant: Accountant | None, releases: int,
                    stddev: float) -> dict[str, float]:
    out = {"noise_stddev": stddev, "dp_rounds": float(releases)}
    if accountant is not None:
        out.update(epsilon=accountant.epsilon(releases), delta=accountant.delta)
    return out
