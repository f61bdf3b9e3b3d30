"""Model parameters as an ordered mapping of names to numpy arrays, and tree operations.

Names are the contract between the server and the institutions: an update must carry exactly
the names, shapes and dtypes of the spec it answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import MalformedUpdate

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one named array."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))  # negative for variable length


ParamSpec = dict[str, ArraySpec]


def spec_of(params: Mapping[str, np.ndarray]) -> ParamSpec:
    """The spec (names, shapes, dtypes) of `params`, in order."""
    return {name: ArraySpec(tuple(a.shape), np.dtype(a.dtype)) for name, a in params.items()}


def check_like(params: Mapping[str, np.ndarray], spec: ParamSpec, what: str = "update") -> None:
    """Check names, shapes, dtypes and finiteness of `params` against `spec`.

    Raises:
        MalformedUpdate: naming the first array that differs and how.
    """
    if not isinstance(params, Mapping):
        raise MalformedUpdate(f"{what}: expected a mapping of name -> array, got {type(params)}")
    missing = [n for n in spec if n not in params]
    extra = [n for n in params if n not in spec]
    if missing or extra:
        raise MalformedUpdate(f"{what}: names differ from the model: missing {missing}, "
                              f"unexpected {extra}")
    for name, want in spec.items():
        arr = params[name]
        if not isinstance(arr, np.ndarray):
            raise MalformedUpdate(f"{what}: '{name}' is {type(arr).__name__}, expected ndarray")
        if not shape_fits(tuple(arr.shape), want.shape):
            raise MalformedUpdate(f"{what}: '{name}' has shape {tuple(arr.shape)}, "
                                  f"expected {want.shape}")
        if arr.dtype != want.dtype:
            raise MalformedUpdate(f"{what}: '{name}' has dtype {arr.dtype}, expected {want.dtype}")
        if not all_finite(arr):
            raise MalformedUpdate(f"{what}: '{name}' contains NaN or Inf values")


def shape_fits(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Equal shapes, where -1 in `want` admits any length (variable-size ciphertexts)."""
    return len(shape) == len(want) and all(w in (-1, s) for s, w in zip(shape, want))


def all_finite(arr: np.ndarray) -> bool:
    """No NaN or Inf in `arr`. A finite sum proves it without a temporary (Inf or NaN would
    propagate into the sum); only a non-finite sum (a NaN, an Inf, or float overflow of large
    finite values) needs the element-wise check."""
    if arr.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(arr.sum()):
            return True
    return bool(np.isfinite(arr).all())


def zeros(spec: ParamSpec) -> Params:
    """Fresh zero arrays for every name in `spec`."""
    return {name: np.zeros(s.shape, s.dtype) for name, s in spec.items()}


def copy(params: Mapping[str, np.ndarray]) -> Params:
    return {name: np.array(a, copy=True) for name, a in params.items()}


def sub(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Params:
    """a - b, name by name."""
    return {name: a[name] - b[name] for name in a}


def add(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Params:
    """a + b, name by name."""
    return {name: a[name] + b[name] for name in a}


def scale(a: Mapping[str, np.ndarray], factor: float) -> Params:
    """factor * a, keeping each array's dtype."""
    return {name: (x * factor).astype(x.dtype, copy=False) for name, x in a.items()}


def num_parameters(params: Mapping[str, np.ndarray]) -> int:
    return int(sum(a.size for a in params.values()))


def global_norm(params: Mapping[str, np.ndarray]) -> float:
    """L2 norm of all arrays taken together."""
    return float(np.sqrt(sum(float(np.vdot(a, a)) for a in params.values())))



def split_prefixed(params: Mapping[str, np.ndarray], prefix: str) -> tuple[Params, Params]:
    """(entries without `prefix`, entries with it, the prefix stripped from their names)."""
    rest = {n: a for n, a in params.items() if not n.startswith(prefix)}
    found = {n[len(prefix):]: a for n, a in params.items() if n.startswith(prefix)}
    return rest, found


def prefixed(params: Mapping[str, np.ndarray], prefix: str) -> Params:
    """The same arrays under `prefix` + name."""
    return {prefix + n: a for n, a in params.items()}


def digest(params: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes and bytes, in name order): what the
    audit trail records for each update received and each global model."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data if a.size else b"")
    return h.hexdigest()
