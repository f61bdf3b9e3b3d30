"""What each party of a vertical run does on its own, the same in simulation and deployment:
put the shared rows in one common order, draw the held-out rows, and standardise its own
columns with its own training rows' statistics (its columns never leave it, so neither do
their statistics)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.core.rng import derive_seed, generator
from fedsilo.data.preprocessing import binarize_target
from fedsilo.data.schema import Schema
from fedsilo.errors import ConfigError, DataError


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
    test[generator(seed, "vertical", "split").permutation(n)[:held_out_count(n, fraction)]] = True
    return test


def held_out_count(n: int, fraction: float) -> int:
    """How many of `n` shared rows are held out (the server derives the training rows)."""
    return math.ceil(fraction * n)


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


@dataclass(frozen=True)
class Layout:
    """What every party of a run agrees on about the tables (from the run config)."""

    id: str
    target: str
    task: str
    positive_above: float | None
    exclude: tuple[str, ...]
    test_fraction: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Layout:
        """Raises: ConfigError, naming what is malformed."""
        try:
            above = raw.get("positive_above")
            return cls(str(raw["id"]), str(raw["target"]), str(raw["task"]),
                       None if above is None else float(above),
                       tuple(str(c) for c in raw.get("exclude") or ()),
                       float(raw["test_fraction"]), int(raw["seed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"vertical layout is malformed: {e!r}") from None


@dataclass(frozen=True)
class PartyBlock:
    """One party's shared rows, in the common order: its standardised columns, the held-out
    mask, its column names and (the label holder) the labels, on their own scale."""

    x: np.ndarray
    test: np.ndarray
    columns: list[str]
    y: np.ndarray | None


def labelled(table: pd.DataFrame, layout: Layout, party: str, holder: bool) -> pd.DataFrame:
    """The rows a party aligns: all of them, or the label holder's labelled ones.

    Raises:
        DataError: no ID column, or a label holder without the target column.
    """
    if layout.id not in table.columns:
        raise DataError(f"party '{party}' has no ID column '{layout.id}' (data.id)")
    if not holder:
        return table.reset_index(drop=True)
    if layout.target not in table.columns:
        raise DataError(f"label holder '{party}' has no target column '{layout.target}'")
    return table[table[layout.target].notna()].reset_index(drop=True)


def ids_of(table: pd.DataFrame, layout: Layout) -> list[str]:
    return table[layout.id].astype(str).tolist()


def party_block(table: pd.DataFrame, rows: Sequence[int], layout: Layout, party: str,
                holder: bool) -> PartyBlock:
    """A party's shared `rows` (as the PSI returned them) put in the common order, split and
    standardised where they are."""
    ids = ids_of(table, layout)
    order = common_order([ids[r] for r in rows], layout.seed)
    frame = table.iloc[[rows[k] for k in order]].reset_index(drop=True)
    test = held_out_rows(len(frame), layout.test_fraction, layout.seed)
    columns = [c for c in frame.columns
               if c not in (layout.id, layout.target, *layout.exclude)]
    y = None
    if holder:
        schema = Schema(layout.target, layout.task, ("_",),
                        positive_above=layout.positive_above)
        y = binarize_target(frame[layout.target], schema).to_numpy(dtype=np.float64)
    return PartyBlock(standardised(frame[columns], test, party), test, columns, y)


def label_scale(y_train: np.ndarray, task: str) -> tuple[float, float]:
    """The label holder's scale for regression labels: its training rows' mean and deviation
    (other tasks: 0 and 1, labels as they are)."""
    if task != "regression":
        return 0.0, 1.0
    return float(y_train.mean()), float(y_train.std() or 1.0)
