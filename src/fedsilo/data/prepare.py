"""From institution tables to ready arrays: split each institution, fit preprocessing on
federated statistics, and build each institution's `LocalData`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fedsilo.core.rng import derive_seed
from fedsilo.data.arrays import ArrayData
from fedsilo.data.checks import check_table
from fedsilo.data.local_data import LocalData
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor, binarize_target, merge_all
from fedsilo.data.schema import Schema

Table = pd.DataFrame | ArrayData  # an institution's data: rows of a table, or arrays


@dataclass(frozen=True)
class InstitutionSplit:
    """One institution's rows, split into training and held-out test rows."""

    name: str
    train: Table
    test: Table


def split_institutions(tables: Mapping[str, Table], schema: Schema,
                       test_fraction: float, seed: int) -> list[InstitutionSplit]:
    """Per-institution train/test split, stratified on the target where every class has two
    or more rows. Rows without a target are dropped.

    Raises:
        DataError: what `check_table` finds (a missing column, text in a numeric column,
            fewer than 2 rows with a target).
    """
    out = []
    for name in sorted(tables):
        frame = tables[name]
        check_table(frame, schema, name)
        if isinstance(frame, ArrayData):
            y = binarize_target(frame.labels, schema)
        else:
            frame = frame[frame[schema.target].notna()].reset_index(drop=True)
            y = binarize_target(frame[schema.target], schema)
        stratify = None
        if schema.task != "regression" and y.value_counts().min() >= 2:
            stratify = y
        random_state = derive_seed(seed, name, "split") % 2**32
        if isinstance(frame, ArrayData):
            train_idx, test_idx = train_test_split(np.arange(len(frame)),
                                                   test_size=test_fraction, stratify=stratify,
                                                   random_state=random_state)
            out.append(InstitutionSplit(name, frame.take(train_idx), frame.take(test_idx)))
            continue
        train, test = train_test_split(frame, test_size=test_fraction, stratify=stratify,
                                       random_state=random_state)
        out.append(InstitutionSplit(name, train.reset_index(drop=True),
                                    test.reset_index(drop=True)))
    return out


def federated_preprocessor(splits: Sequence[InstitutionSplit], schema: Schema,
                           classes: tuple[str, ...] | None = None) -> Preprocessor:
    """Preprocessing fitted on the merge of each institution's training-split statistics."""
    return Preprocessor.from_statistics(
        merge_all([LocalStatistics.of(s.train, schema) for s in splits]), schema, classes)


def local_data(split: InstitutionSplit, pre: Preprocessor) -> LocalData:
    """The institution's arrays under preprocessing `pre`."""
    x_train, y_train = pre.transform(split.train)
    x_test, y_test = pre.transform(split.test)
    task = pre.schema.task
    classes = len(pre.classes) if task != "regression" else 1
    return LocalData(x_train, y_train, x_test, y_test, task, classes,
                     pre.target_mean, pre.target_std)


def pooled(splits: Sequence[InstitutionSplit]) -> InstitutionSplit:
    """All institutions' rows in one table: the simulation-only pooled reference."""
    return InstitutionSplit("pooled", _concat([s.train for s in splits]),
                            _concat([s.test for s in splits]))


def _concat(parts: Sequence[Table]) -> Table:
    arrays = [p for p in parts if isinstance(p, ArrayData)]
    if arrays:
        return ArrayData.concat(arrays)
    return pd.concat([p for p in parts if isinstance(p, pd.DataFrame)], ignore_index=True)

