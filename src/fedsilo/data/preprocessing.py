"""Federated preprocessing: statistics from per-institution aggregates, never from rows.

Each institution computes `LocalStatistics` on its training split (counts, sums, sums of
squares of each numeric column, the category counts of each categorical column, the target's
moments or class counts). The server merges them: merged sums equal the pooled sums, so the
global means, standard deviations and category sets equal the pooled ones exactly (up to float
rounding), and a `Preprocessor` built from them imputes, standardises and one-hot encodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.data.arrays import ArrayData
from fedsilo.data.schema import Schema
from fedsilo.errors import DataError

Moments = tuple[int, float, float]  # non-missing count, sum, sum of squares


def _moments(values: pd.Series) -> Moments:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=np.float64)
    return len(v), float(v.sum()), float(np.dot(v, v))


def _moments_array(values: np.ndarray) -> Moments:
    v = values.astype(np.float64).ravel()
    return len(v), float(v.sum()), float(np.dot(v, v))


def _moments_of(m: Any) -> Moments:
    n, total, squares = m
    return int(n), float(total), float(squares)


def _add(a: Moments, b: Moments) -> Moments:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def as_labels(values: pd.Series) -> pd.Series:
    """Category labels as strings, with integral numbers written alike ("1.0" and "1" -> "1"),
    since one institution's file may hold floats where another's holds integers."""
    def one(v: object) -> str:
        if isinstance(v, (int, float, np.integer, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return values.dropna().map(one)


def binarize_target(values: pd.Series, schema: Schema) -> pd.Series:
    """Apply `positive_above` (y = target > threshold) if declared, else leave as is."""
    if schema.positive_above is None:
        return values
    return (pd.to_numeric(values) > schema.positive_above).astype(int)


@dataclass(frozen=True)
class LocalStatistics:
    """What one institution shares about its training rows (or the merge of several)."""

    rows: int
    numeric: dict[str, Moments]
    categories: dict[str, dict[str, int]]
    target: Moments | None = None
    classes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, frame: pd.DataFrame | ArrayData, schema: Schema) -> LocalStatistics:
        """Aggregates of `frame`'s rows for every declared column (array data: of every
        value of each channel)."""
        if isinstance(frame, ArrayData):
            numeric = {c: _moments_array(frame.x[:, i]) for i, c in enumerate(schema.numeric)}
            return cls._with_target(len(frame), numeric, {}, frame.labels, schema)
        schema.check(frame, "statistics")
        numeric = {c: _moments(frame[c]) for c in schema.numeric}
        cats = {c: {str(k): int(v) for k, v in as_labels(frame[c]).value_counts().items()}
                for c in schema.categorical}
        return cls._with_target(len(frame), numeric, cats, frame[schema.target], schema)

    @classmethod
    def _with_target(cls, rows: int, numeric: dict[str, Moments],
                     cats: dict[str, dict[str, int]], target: pd.Series,
                     schema: Schema) -> LocalStatistics:
        y = binarize_target(target.dropna(), schema)
        if schema.task == "regression":
            return cls(rows, numeric, cats, target=_moments(y))
        classes = {str(k): int(v) for k, v in as_labels(y).value_counts().items()}
        return cls(rows, numeric, cats, classes=classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: this is all an institution sends about its rows."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> LocalStatistics:
        """The statistics an institution sent (what they say is checked in data/plausible).

        Raises:
            DataError: they are not statistics at all (the reason names no value).
        """
        try:
            return cls(int(d["rows"]), {c: _moments_of(m) for c, m in d["numeric"].items()},
                       {c: {str(k): int(v) for k, v in cats.items()}
                        for c, cats in d["categories"].items()},
                       _moments_of(d["target"]) if d.get("target") is not None else None,
                       {str(k): int(v) for k, v in d.get("classes", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise DataError(f"malformed statistics from an institution "
                            f"({type(e).__name__})") from None

    def merge(self, other: LocalStatistics) -> LocalStatistics:
        """The statistics of both institutions' rows together."""
        cats = {c: dict(Counter(self.categories[c]) + Counter(other.categories[c]))
                for c in self.categories}
        target = (_add(self.target, other.target)
                  if self.target is not None and other.target is not None else None)
        return LocalStatistics(self.rows + other.rows,
                               {c: _add(m, other.numeric[c]) for c, m in self.numeric.items()},
                               cats, target, dict(Counter(self.classes) + Counter(other.classes)))

    def mean_std(self, moments: Moments) -> tuple[float, float]:
        """Mean and population standard deviation (ddof=0) from (count, sum, sum of squares)."""
        n, s, ss = moments
        if n == 0:
            return 0.0, 1.0
        mean = s / n
        return mean, float(np.sqrt(max(ss / n - mean * mean, 0.0)))


def merge_all(stats: list[LocalStatistics]) -> LocalStatistics:
    out = stats[0]
    for s in stats[1:]:
        out = out.merge(s)
    return out


def _sort_key(label: str) -> tuple[int, float | str]:
    try:
        return 0, float(label)
    except ValueError:
        return 1, label


@dataclass(frozen=True)
class Preprocessor:
    """Impute (numeric: mean; categorical: no level), standardise, one-hot, encode the target."""

    schema: Schema
    means: dict[str, float]
    stds: dict[str, float]
    levels: dict[str, tuple[str, ...]]
    classes: tuple[str, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def from_statistics(cls, stats: LocalStatistics, schema: Schema,
                        classes: tuple[str, ...] | None = None) -> Preprocessor:
        """Fit from merged statistics. `classes` overrides the class set (a local-only model
        still predicts every class of the consortium, even one its own rows lack)."""
        means, stds = {}, {}
        for c, m in stats.numeric.items():
            means[c], sd = stats.mean_std(m)
            stds[c] = sd if sd > 0 else 1.0
        levels = {c: tuple(sorted(v, key=_sort_key)) for c, v in stats.categories.items()}
        classes = classes or tuple(sorted(stats.classes, key=_sort_key))
        if schema.task == "binary" and schema.positive_above is not None:
            classes = ("0", "1")
        if schema.task == "binary" and len(classes) != 2:
            raise DataError(f"binary task: target '{schema.target}' has classes {list(classes)}"
                            f" across all institutions, expected exactly 2")
        t_mean, t_std = 0.0, 1.0
        if schema.task == "regression" and schema.scale_target and stats.target is not None:
            t_mean, t_std = stats.mean_std(stats.target)
            t_std = t_std if t_std > 0 else 1.0
        return cls(schema, means, stds, levels, classes, t_mean, t_std)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schema": self.schema.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        return cls(Schema.from_dict(d["schema"]), dict(d["means"]), dict(d["stds"]),
                   {c: tuple(v) for c, v in d["levels"].items()}, tuple(d["classes"]),
                   float(d["target_mean"]), float(d["target_std"]))

    @property
    def feature_names(self) -> list[str]:
        return [*self.schema.numeric,
                *(f"{c}={lv}" for c in self.schema.categorical for lv in self.levels[c])]

    def transform(self, frame: pd.DataFrame | ArrayData) -> tuple[np.ndarray, np.ndarray]:
        """Feature matrix (float32) and encoded target of `frame`'s rows (array data: its
        inputs, each channel standardised)."""
        if isinstance(frame, ArrayData):
            along = (1, -1) + (1,) * (frame.x.ndim - 2)  # broadcast over axis 1
            mean = np.array([self.means[c] for c in self.schema.numeric]).reshape(along)
            std = np.array([self.stds[c] for c in self.schema.numeric]).reshape(along)
            return ((frame.x - mean) / std).astype(np.float32), self._target(frame.labels)
        self.schema.check(frame, "preprocessing")
        blocks = []
        for c in self.schema.numeric:
            v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
            v = np.where(np.isnan(v), self.means[c], v)
            blocks.append(((v - self.means[c]) / self.stds[c])[:, None])
        for c in self.schema.categorical:
            values = as_labels(frame[c]).reindex(frame.index).to_numpy()
            blocks.append(np.stack([values == lv for lv in self.levels[c]], axis=1)
                          .astype(np.float64) if self.levels[c] else np.zeros((len(frame), 0)))
        x = np.concatenate(blocks, axis=1).astype(np.float32)
        return x, self._target(frame[self.schema.target])

    def _target(self, values: pd.Series) -> np.ndarray:
        y = binarize_target(values, self.schema)
        if self.schema.task == "regression":
            v = pd.to_numeric(y).to_numpy(dtype=np.float64)
            return ((v - self.target_mean) / self.target_std).astype(np.float32)
        index = {label: i for i, label in enumerate(self.classes)}
        labels = as_labels(y)
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(f"target '{self.schema.target}': classes {unknown} were not seen in "
                            f"any institution's training data")
        return labels.map(index).to_numpy(dtype=np.float32)
