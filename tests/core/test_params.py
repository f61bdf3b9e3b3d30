import numpy as np
import pytest

from fedsilo.core.params import check_like, global_norm, spec_of
from fedsilo.core.rng import derive_seed, generator
from fedsilo.errors import MalformedUpdate

SPEC = spec_of({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)})


def good():
    return {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}


def test_valid_update_passes():
    check_like(good(), SPEC)


@pytest.mark.parametrize("mutate, message", [
    (lambda u: u.pop("b"), "missing \\['b'\\]"),
    (lambda u: u.update(extra=np.zeros(1, np.float32)), "unexpected \\['extra'\\]"),
    (lambda u: u.update(w=np.zeros((3, 2), np.float32)),
     "'w' has shape \\(3, 2\\), expected \\(2, 3\\)"),
    (lambda u: u.update(w=np.zeros((2, 3), np.float64)), "'w' has dtype float64, expected float32"),
    (lambda u: u["b"].__setitem__(1, np.nan), "'b' contains NaN or Inf"),
    (lambda u: u["b"].__setitem__(0, np.inf), "'b' contains NaN or Inf"),
    (lambda u: u.update(b=[1.0, 2.0, 3.0]), "'b' is list, expected ndarray"),
])
def test_malformed_update_is_named(mutate, message):
    u = good()
    mutate(u)
    with pytest.raises(MalformedUpdate, match=message):
        check_like(u, SPEC)


def test_global_norm():
    assert global_norm({"a": np.array([3.0]), "b": np.array([4.0])}) == pytest.approx(5.0)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(1, 2, "c0") == derive_seed(1, 2, "c0")
    assert derive_seed(1, 2, "c0") != derive_seed(1, 2, "c1")
    assert derive_seed(1, 2, "c0") != derive_seed(2, 2, "c0")
    a = generator(5, "x").normal(size=4)
    assert np.array_equal(a, generator(5, "x").normal(size=4))
