"""Partitioners that split one dataset into simulated institutions.

Each returns a list of row-index arrays, one per institution, every one non-empty and each row
in exactly one institution. Randomness comes from the generator passed in.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedsilo.errors import ConfigError, DataError


def iid(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled rows dealt into k nearly equal parts."""
    _check(n, k)
    return [np.sort(part) for part in np.array_split(rng.permutation(n), k)]


def quantity_skew(n: int, k: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Sizes drawn from Dirichlet(alpha) (smaller alpha: more unequal), at least one row each."""
    _check(n, k)
    if alpha <= 0:
        raise ConfigError(f"partition: alpha must be > 0, got {alpha}")
    extra = rng.multinomial(n - k, rng.dirichlet(np.full(k, alpha)))
    bounds = np.cumsum(extra + 1)[:-1]
    return [np.sort(part) for part in np.split(rng.permutation(n), bounds)]


def dirichlet(labels: np.ndarray, k: int, alpha: float,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019): each class's rows are split across institutions with
    proportions drawn from Dirichlet(alpha). Large alpha approaches IID; small alpha gives each
    institution few classes. Institutions left empty get one row from the largest one."""
    _check(len(labels), k)
    if alpha <= 0:
        raise ConfigError(f"partition: alpha must be > 0, got {alpha}")
    parts: list[list[int]] = [[] for _ in range(k)]
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet(np.full(k, alpha))) * len(rows)).astype(int)[:-1]
        for i, chunk in enumerate(np.split(rows, cuts)):
            parts[i].extend(chunk.tolist())
    for i in range(k):
        if not parts[i]:
            donor = max(range(k), key=lambda j: len(parts[j]))
            parts[i].append(parts[donor].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def by_column(frame: pd.DataFrame, column: str,
              merge: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Natural split: one institution per value of `column` (e.g. region, hospital).
    `merge` maps small groups into others (e.g. {"ISLAND": "NEAR OCEAN"})."""
    if column not in frame.columns:
        raise DataError(f"partition: column '{column}' not in data; present: "
                        f"{list(frame.columns)}")
    keys = frame[column].astype(str).replace(dict(merge or {}))
    return {str(name): np.flatnonzero(keys.to_numpy() == name) for name in sorted(keys.unique())}


def _check(n: int, k: int) -> None:
    if k < 1:
        raise ConfigError(f"partition: number of institutions must be >= 1, got {k}")
    if n < k:
        raise DataError(f"partition: {n} rows cannot fill {k} non-empty institutions")
