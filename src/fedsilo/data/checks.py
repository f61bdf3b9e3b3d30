"""An institution's check of its own table before it shares anything: every declared column
present, numbers where numbers are declared, enough rows with a target.

The messages leave the institution (as a reply's reason), so they name the institution, its
file, the column and the kind of problem, and never a value from the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsilo.data.arrays import ArrayData
from fedsilo.data.schema import Schema
from fedsilo.errors import DataError

MIN_ROWS = 2  # one training row and one test row
MAX_ABS = 1e100  # larger numbers overflow the shared sums of squares (float64)


def describe(institution: str, frame: pd.DataFrame | ArrayData) -> str:
    """The phrase "institution 'NAME' (file FILE)", the file as `read_table` recorded it."""
    file = frame.file if isinstance(frame, ArrayData) else frame.attrs.get("file")
    return f"institution '{institution}'" + (f" (file {file})" if file else "")


def text_cells(values: pd.Series) -> int:
    """How many cells hold something that is neither missing nor a number."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return 0
    return int((values.notna() & pd.to_numeric(values, errors="coerce").isna()).sum())


def check_table(frame: pd.DataFrame | ArrayData, schema: Schema, institution: str) -> None:
    """Raise DataError naming every problem of `institution`'s table (no value quoted).

    Raises:
        DataError: a declared column is missing; a numeric feature, or a target that must be
            numeric (regression, `positive_above`), holds text; fewer than 2 rows have a
            target.
    """
    where = describe(institution, frame)
    if isinstance(frame, ArrayData) or schema.shape is not None:
        check_arrays(frame, schema, where)
        return
    schema.check(frame, where)
    problems = [p for c in schema.numeric if (p := _feature_problem(frame[c], c, where))]
    if not problems:  # sizes only mean something once the numbers are numbers
        problems = [p for c in (*schema.numeric, schema.target)
                    if (p := _range_problem(frame[c], c, where))]
    target = frame[schema.target]
    numeric_target = ("data.positive_above" if schema.positive_above is not None
                      else "a regression target" if schema.task == "regression" else None)
    text = text_cells(target) if numeric_target else 0
    if text:
        problems.append(f"target column '{schema.target}' of {where} has non-numeric text in "
                        f"{text} row(s): {numeric_target} needs numbers")
    rows = int(target.notna().sum())
    if rows < MIN_ROWS:
        problems.append(f"{where} has {rows} row(s) with a target, need at least {MIN_ROWS} "
                        f"(a training and a test row)")
    if problems:
        raise DataError("; ".join(problems))


def _feature_problem(values: pd.Series, column: str, where: str) -> str | None:
    text = text_cells(values)
    if not text:
        return None
    head = f"column '{column}' of {where} has non-numeric text in"
    if text == int(values.notna().sum()):
        return (f"{head} all {text} non-missing row(s): if it is not a number, list it in "
                f"data.categorical or data.exclude")
    return (f"{head} {text} row(s): numeric columns hold numbers (list a missing-value marker "
            f"in data.na_values)")


def _range_problem(values: pd.Series, column: str, where: str) -> str | None:
    """Infinite or huge numbers: they would overflow everyone's preprocessing."""
    # compared in float64: MAX_ABS would overflow a float32 column's dtype (a warning a column)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = int((np.abs(numbers) > MAX_ABS).sum())
    if not bad:
        return None
    return (f"column '{column}' of {where} has {bad} row(s) with infinite values or magnitudes "
            f"above {MAX_ABS:g}: rescale them or list them as missing in data.na_values")


def check_arrays(data: pd.DataFrame | ArrayData, schema: Schema, where: str) -> None:
    """Array data's problems: a table where arrays are declared (or the reverse), inputs of
    another shape than the run's, values that are not finite or too large, labels that are
    not numbers for a regression, fewer than 2 examples.

    Raises:
        DataError: naming every problem (shapes and counts, never a value).
    """
    if not isinstance(data, ArrayData) or schema.shape is None:
        have, want = ("a table", "array data") if schema.shape else ("array data", "a table")
        raise DataError(f"{where} holds {have}, the run reads {want} (data.shape declares "
                        f"array inputs)")
    problems = []
    if data.shape != schema.shape:
        problems.append(f"{where} has inputs shaped {list(data.shape)}, the run's are "
                        f"{list(schema.shape)} (data.shape)")
    elif not np.isfinite(data.x).all() or float(np.abs(data.x).max(initial=0)) > MAX_ABS:
        problems.append(f"{where} has inputs that are not finite or above {MAX_ABS:g}")
    if schema.task == "regression" or schema.positive_above is not None:
        numbers = pd.to_numeric(data.labels, errors="coerce")
        if numbers.isna().any():
            problems.append(f"labels of {where} are not all numbers: a regression target "
                            f"or data.positive_above needs numbers")
    if len(data) < MIN_ROWS:
        problems.append(f"{where} has {len(data)} example(s), need at least {MIN_ROWS}")
    if problems:
        raise DataError("; ".join(problems))
