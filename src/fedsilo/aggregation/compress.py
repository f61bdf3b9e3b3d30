"""TopK: top-k sparsification of each update with error feedback (Stich et al., "Sparsified
SGD with Memory", NeurIPS 2018; Karimireddy et al., "Error Feedback Fixes SignSGD", ICML 2019).

Client half (`encode`), per institution and round t, with residual e_t (e_1 = 0):
  a = u_t + e_t;  s_t = top_k(a);  e_{t+1} = a - s_t
so Σ_t s_t = Σ_t u_t - e_{T+1}: nothing is lost, only delayed. k is chosen per array,
k = ⌈fraction × size⌉: the wire form of every array is then fixed by the model spec alone (the
server validates names, shapes and dtypes before accumulating), and every array (a bias
too) gets some signal each round. An array travels as two entries, `<name>#idx` (int32, sorted
distinct flat indices) and `<name>#val` (its values there); an array whose sparse form would
not be smaller (k × (4 + itemsize) ≥ size × itemsize, e.g. a bias of 1) travels dense and
untouched, as do the side values of the client work (fednova.tau, SCAFFOLD's Δc: names with a
client work's side-value prefix, `declare_aux`): they are not updates to compress.

Where the residual lives: in this layer's client half, per institution (`context["me"]`). An
institution builds its encoder once per run setup (client/institution.py `Institution._client`
keeps one `Client` and its encoder per setup), so the residual lives in the institution's
process between rounds and never leaves it; the server's instance never encodes. A restart
starts from e = 0 (the unsent mass is lost, the identity holds from there).

Server half: each contribution is densified (indices checked: in range, strictly increasing)
and handed to `inner`, so the layers below see dense updates (a mean, a robust rule).

Stacking (aggregation/build.py `check_stack` enforces it):
- not above a secure sum: a masked update is uniformly random in every coordinate, so a sparse
  update would travel dense (and the server could not densify what it cannot see);
- above DP clipping, never below: compress, then clip what is sent. What is sent is then
  clip(top_k(u + e)) of norm ≤ C, so the noise calibrated to C stays sound; the other order
  would send top_k(clip(u) + e), whose norm the residual can push above C. The indices travel
  in the clear like the values: central DP trusts the server with each contribution and
  protects what is released (the noised aggregate), which the positions do not change;
- above server-side layers that read each contribution (norm_bound, default_bound, robust
  rules read the dense update this layer hands down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator, Delegating, Layer, aux_of
from fedsilo.core.params import ArraySpec, Params, ParamSpec
from fedsilo.core.side_values import AUX_PREFIXES
from fedsilo.errors import ConfigError, MalformedUpdate

IDX, VAL = "#idx", "#val"
INDEX_DTYPE = np.dtype(np.int32)
_SHAPES = "topk_shapes"  # accumulator extra: the dense shape of each sparse entry
_SENT = "topk_sent"


def is_side_value(name: str) -> bool:
    """Whether `name` is a client work's side value (never sparsified): the server knows them
    by the prefixes of core/side_values.py, an institution also by `declare_aux`."""
    return name.startswith(tuple(AUX_PREFIXES.values()))


class TopK(Delegating):
    """Keeps the ⌈`fraction` × size⌉ largest-magnitude coordinates of each array of an update,
    with error feedback; `inner` aggregates the densified updates."""

    name = "topk"
    needs_individual_updates = True  # the server densifies each contribution
    commutes_with_secure_sum = False
    why_not_above_secure_sum = ("sends each update as indices and values, and the secure sum's "
                                "masks make every coordinate of a masked update non-zero (the "
                                "sparse update would travel dense)")
    sends_sparse = True
    preserves_sensitivity = False

    def __init__(self, fraction: float, inner: Layer) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"topk: fraction must be in (0, 1], got {fraction}")
        self.fraction, self.inner = float(fraction), inner
        self.residuals: dict[str, Params] = {}  # client half: each institution's e_t

    def k_of(self, spec: ArraySpec) -> int:
        return max(1, math.ceil(self.fraction * spec.size))

    def sparse_sizes(self, spec: ParamSpec) -> dict[str, int]:
        """The entries of `spec` sent sparse, with their k."""
        out = {}
        for name, s in spec.items():
            k = self.k_of(s)
            if (not is_side_value(name) and s.size > 0
                    and k * (INDEX_DTYPE.itemsize + s.dtype.itemsize) < s.size * s.dtype.itemsize):
                out[name] = k
        return out

    # client half ---------------------------------------------------------------------------
    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        aux = aux_of(context)
        spec = {n: ArraySpec(tuple(a.shape), a.dtype) for n, a in update.items() if n not in aux}
        sizes = self.sparse_sizes(spec)
        me = str(context.get("me", ""))
        residual = self.residuals.get(me, {})
        sent, chosen, kept = dict(update), {}, {}
        for name, k in sizes.items():
            sent[name], chosen[name], kept[name] = top_k(update[name], residual.get(name), k)
        self.residuals[me] = kept
        encoded = self.inner.encode(sent, num_examples, config, context)
        return packed(encoded, chosen)

    def residual(self, institution: str) -> Params:
        """The error-feedback residual `institution` will add to its next update."""
        return dict(self.residuals.get(institution, {}))

    # server half ---------------------------------------------------------------------------
    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        sizes = self.sparse_sizes(spec)
        out: ParamSpec = {}
        for name, s in self.inner.encoded_spec(spec).items():
            if name in sizes:
                out[name + IDX] = ArraySpec((sizes[name],), INDEX_DTYPE)
                out[name + VAL] = ArraySpec((sizes[name],), s.dtype)
            else:
                out[name] = s
        return out

    def zero(self, spec: ParamSpec) -> Accumulator:
        acc = self.inner.zero(spec)
        acc.extra[_SHAPES] = {n: spec[n].shape for n in self.sparse_sizes(spec)}
        acc.extra[_SENT] = [0, 0]  # values received sparse, values those arrays hold
        return acc

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        shapes = acc.extra[_SHAPES]
        self.inner.accumulate(acc, densified(encoded, shapes))
        acc.extra[_SENT][0] += sum(encoded[n + VAL].size for n in shapes)
        acc.extra[_SENT][1] += sum(math.prod(s) for s in shapes.values())

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        shapes = a.extra[_SHAPES]
        sent = [x + y for x, y in zip(a.extra[_SENT], b.extra[_SENT])]
        out = self.inner.merge(a, b)
        out.extra[_SHAPES], out.extra[_SENT] = shapes, sent
        return out

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        state, out, metrics = self.inner.finalize(state, acc)
        sent, held = acc.extra[_SENT]
        return state, out, {**metrics, "topk_sent_fraction": sent / held if held else 1.0}


def top_k(update: np.ndarray, residual: np.ndarray | None,
          k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sent: a = update + residual with all but its k largest |a_j| zeroed, their sorted flat
    indices, the new residual a - sent)."""
    full = update + residual if residual is not None else update.copy()
    flat = full.reshape(-1)
    idx = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:])
    sent = np.zeros_like(flat)
    sent[idx] = flat[idx]
    flat[idx] = 0  # `full` is ours: what was not sent is the residual
    return sent.reshape(update.shape), idx.astype(INDEX_DTYPE), full


def packed(encoded: Params, chosen: Mapping[str, np.ndarray]) -> Params:
    """`encoded` with each chosen array replaced by its indices and the values there."""
    out: Params = {}
    for name, a in encoded.items():
        if name in chosen:
            out[name + IDX] = chosen[name]
            out[name + VAL] = np.ascontiguousarray(a.reshape(-1)[chosen[name]])
        else:
            out[name] = a
    return out


def densified(encoded: Params, shapes: Mapping[str, tuple[int, ...]]) -> Params:
    """The dense contribution of a packed one (`shapes`: the dense shape of each sparse entry).

    Raises:
        MalformedUpdate: indices out of range, repeated or unsorted.
    """
    out: Params = {}
    for name, a in encoded.items():
        if name.endswith(IDX) and name[:-len(IDX)] in shapes:
            base = name[:-len(IDX)]
            out[base] = dense_of(base, a, encoded[base + VAL], shapes[base])
        elif not (name.endswith(VAL) and name[:-len(VAL)] in shapes):
            out[name] = a
    return out


def dense_of(name: str, idx: np.ndarray, val: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    size = math.prod(shape)
    if idx.size and (idx[0] < 0 or idx[-1] >= size or np.any(np.diff(idx) <= 0)):
        raise MalformedUpdate(f"topk: the indices of '{name}' are not distinct sorted "
                              f"positions in [0, {size})")
    dense = np.zeros(size, val.dtype)
    dense[idx] = val
    return dense.reshape(shape)
