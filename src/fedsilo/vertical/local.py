"""What each party of a vertical run does on its own, the same in simulation and deployment:
put the shared rows in one common order, draw the held-out rows, and standardise its own
columns with its own training rows' statistics (its columns never leave it, so neither do
their statistics)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedsilo.core.rng import derive_seed, generator
from fedsilo.errors import DataError


def common_order(ids: Sequence[str], seed: int) -> list[int]:
    """Positions of the shared `ids` sorted by SHA-256 of (run seed, ID): every party holding
    the same IDs gets the same order, whatever order the PSI returned them in, and the order
    says nothing about where a row sits in another party's table."""
    key = [hashlib.sha256(f"{seed}\n{x}".encode()).digest() for x in ids]
    return sorted(range(len(ids)), key=key.__getitem__)


def held_out_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """The held-out shared rows (a boolean mask): the same at every party."""
    if n < 4:
        raise DataError(f"only {n} shared rows with a label: too few to train and test")
    test = np.zeros(n, bool)
    test[generator(seed, "vertical", "split").permutation(n)[:math.ceil(fraction * n)]] = True
    return test


def model_seed(seed: int) -> int:
    """The seed of the protocol's batch order and initial weights, from the run seed."""
    return derive_seed(seed, "vertical", "model") % 2**31


def standardised(frame: pd.DataFrame, test: np.ndarray, party: str) -> np.ndarray:
    """A party's columns as float32, missing values imputed and every column standardised
    with the mean and deviation of its own training rows."""
    try:
        x = frame.apply(pd.to_numeric, errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError):
        raise DataError(f"party '{party}': every column except data.id and the target must "
                        f"be numeric (list others in data.exclude)") from None
    train = x[~test]
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    x = np.where(np.isnan(x), mean, x)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
