"""The server's check of one institution's preprocessing statistics, before they are merged:
could they come from real rows of the declared columns? Statistics that could not would
poison every institution's features (NaN sums) or blow the model up (thousands of fake
category levels), so they are refused for the prepare stage, with the reason.

Rules: exactly the declared columns; counts are integers, 0 <= n <= rows (array data: rows
times the values of one channel); sums finite and
within what values of at most MAX_ABS give (the institutions' own limit, data/checks.py);
sum of squares >= (sum)² / n (Cauchy-Schwarz, up to rounding); category and class counts
positive and adding up to at most rows; at most `max_levels` levels per categorical column
and `max_levels` classes (2 for a binary task), labels of at most MAX_LABEL characters; test
rows at most what the training rows allow at the run's test fraction (`plausible_test_rows`).
Reasons name the column and the rule, never a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedsilo.data.checks import MAX_ABS
from fedsilo.data.preprocessing import LocalStatistics, Moments
from fedsilo.data.schema import Schema
from fedsilo.errors import DataError
from fedsilo.limits import MAX_LEVELS as DEFAULT_MAX_LEVELS  # data.max_levels' default

MAX_LABEL = 200           # characters of one category or class label
ROUNDING = 1e-9           # relative slack of the Cauchy-Schwarz check


def check_statistics(stats: LocalStatistics, schema: Schema,
                     max_levels: int = DEFAULT_MAX_LEVELS, error: float = 0.0) -> None:
    """Raise DataError unless `stats` follows the rules above. `error`: how far each sum may
    be off (secure preprocessing's fixed point), widening the Cauchy-Schwarz slack."""
    rows = stats.rows
    if rows < 0:
        raise DataError("statistics: a negative number of rows")
    _same_columns("numeric", stats.numeric, schema.numeric)
    _same_columns("categorical", stats.categories, schema.categorical)
    for column, moments in stats.numeric.items():  # array data: values per channel
        _check_moments(f"column '{column}'", moments, rows * schema.values_per_row, error)
    for column, levels in stats.categories.items():
        _check_counts(f"column '{column}'", levels, rows, max_levels, "levels")
    if schema.task == "regression":
        if stats.target is None:
            raise DataError(f"statistics: no moments of target '{schema.target}'")
        _check_moments(f"target '{schema.target}'", stats.target, rows, error)
    else:
        limit = 2 if schema.task == "binary" else max_levels
        _check_counts(f"target '{schema.target}'", stats.classes, rows, limit, "classes")


def plausible_test_rows(train_rows: int, test_fraction: float) -> int:
    """The most test rows an institution with `train_rows` training rows can hold out at
    `test_fraction`: twice what one split gives (a split takes ceil(fraction · n) of n rows),
    so that a reference made of several institutions' splits (the pooled one) passes too."""
    ratio = max(1.0, test_fraction / (1.0 - test_fraction))
    return math.ceil(2 * ratio * (train_rows + 1))


def _same_columns(kind: str, found: Mapping[str, object], declared: tuple[str, ...]) -> None:
    if set(found) != set(declared):
        missing = sorted(set(declared) - set(found))
        raise DataError(f"statistics: {kind} columns differ from the declared ones (missing "
                        f"{missing[:10]}, {len(set(found) - set(declared))} undeclared)")


def _check_moments(what: str, moments: Moments, rows: int, error: float = 0.0) -> None:
    n, total, squares = moments
    if not 0 <= n <= rows:
        raise DataError(f"statistics: {what} counts more values than rows")
    if not (math.isfinite(total) and math.isfinite(squares)):
        raise DataError(f"statistics: {what} has a sum that is not finite")
    if abs(total) > n * MAX_ABS or not 0 <= squares <= n * MAX_ABS**2:
        raise DataError(f"statistics: {what} has sums beyond what {n} values of at most "
                        f"{MAX_ABS:g} give")
    slack = error * (n + 2 * abs(total) + 3 * error)  # sums each off by at most `error`
    if total * total > n * squares * (1 + ROUNDING) + slack:
        raise DataError(f"statistics: {what} has a sum of squares below (sum)² / n")


def _check_counts(what: str, counts: Mapping[str, int], rows: int, limit: int,
                  kind: str) -> None:
    if len(counts) > limit:
        raise DataError(f"statistics: {what} has {len(counts)} {kind}, more than {limit}"
                        + (" (data.max_levels)" if kind == "levels" else ""))
    if any(len(label) > MAX_LABEL for label in counts):
        raise DataError(f"statistics: {what} has a label longer than {MAX_LABEL} characters")
    if any(c < 1 for c in counts.values()) or sum(counts.values()) > rows:
        raise DataError(f"statistics: {what} has {kind} counts that are not positive or add "
                        f"up to more than the rows")
