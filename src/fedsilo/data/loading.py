"""Reading an institution's table from CSV, with errors that name the file and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fedsilo.errors import DataError


def read_table(path: str | Path, columns: Sequence[str] | None = None,
               na_values: Sequence[str] = ("?", "")) -> pd.DataFrame:
    """Read a CSV. `columns` names a header-less file's columns (the file has no header line).
    The file's name is kept in `frame.attrs["file"]`, for messages about its data.

    Raises:
        DataError: the file does not exist, cannot be parsed, is empty, or has a different
            number of fields than `columns` names.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    try:
        frame = pd.read_csv(p, header=None if columns else "infer",
                            names=list(columns) if columns else None,
                            na_values=list(na_values), keep_default_na=True,
                            skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot parse {p}: {e}") from e
    if frame.empty:
        raise DataError(f"{p} holds no rows")
    if columns and frame.iloc[:, -1].isna().all() and len(frame.columns) > 1:
        raise DataError(f"{p}: fewer fields per row than the {len(columns)} columns named")
    frame.attrs["file"] = p.name
    return frame
