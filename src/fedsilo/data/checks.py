"""An institution's check of its own table before it shares anything: every declared column
present, numbers where numbers are declared, enough rows with a target.

The messages leave the institution (as a reply's reason), so they name the institution, its
file, the column and the kind of problem, and never a value from the table.
"""

from __future__ import annotations

import pandas as pd

from fedsilo.data.schema import Schema
from fedsilo.errors import DataError

MIN_ROWS = 2  # one training row and one test row
MAX_ABS = 1e100  # larger numbers overflow the shared sums of squares (float64)


def describe(institution: str, frame: pd.DataFrame) -> str:
    """The phrase "institution 'NAME' (file FILE)", the file as `read_table` recorded it."""
    file = frame.attrs.get("file")
    return f"institution '{institution}'" + (f" (file {file})" if file else "")


def text_cells(values: pd.Series) -> int:
    """How many cells hold something that is neither missing nor a number."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return 0
    return int((values.notna() & pd.to_numeric(values, errors="coerce").isna()).sum())


def check_table(frame: pd.DataFrame, schema: Schema, institution: str) -> None:
    """Raise DataError naming every problem of `institution`'s table (no value quoted).

    Raises:
        DataError: a declared column is missing; a numeric feature, or a target that must be
            numeric (regression, `positive_above`), holds text; fewer than 2 rows have a
            target.
    """
    where = describe(institution, frame)
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
    numbers = pd.to_numeric(values, errors="coerce")
    bad = int((numbers.abs() > MAX_ABS).sum())
    if not bad:
        return None
    return (f"column '{column}' of {where} has {bad} row(s) with infinite values or magnitudes "
            f"above {MAX_ABS:g}: rescale them or list them as missing in data.na_values")
