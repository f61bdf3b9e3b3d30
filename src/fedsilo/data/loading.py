"""Reading an institution's table from CSV, with errors that name the file and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fedsilo.errors import DataError
from fedsilo.limits import MAX_COLUMNS, MAX_LINE_BYTES


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
    _check_width(p, columns)
    try:
        frame = pd.read_csv(p, header=None if columns else "infer",
                            names=list(columns) if columns else None,
                            na_values=list(na_values), keep_default_na=True,
                            skipinitialspace=True)
    except pd.errors.ParserError as e:  # pandas names lines and field counts, not values
        raise DataError(f"cannot parse {p}: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:  # their text may quote the file's bytes
        raise DataError(f"cannot parse {p}: {type(e).__name__} (not a UTF-8 CSV table?)"
                        ) from None
    if frame.empty:
        raise DataError(f"{p} holds no rows")
    if columns and frame.iloc[:, -1].isna().all() and len(frame.columns) > 1:
        raise DataError(f"{p}: fewer fields per row than the {len(columns)} columns named")
    frame.attrs["file"] = p.name
    return frame


def _check_width(path: Path, columns: Sequence[str] | None) -> None:
    """Refuse a file wider than MAX_COLUMNS from its first line, before parsing it all."""
    with open(path, "rb") as f:
        first = f.readline(MAX_LINE_BYTES + 1)
    fields = first.count(b",") + 1
    if len(first) > MAX_LINE_BYTES or fields > MAX_COLUMNS:
        raise DataError(f"{path.name}: its first line has more than {MAX_COLUMNS} fields or "
                        f"{MAX_LINE_BYTES // (1 << 20)} MiB; fedsilo reads tables of at most "
                        f"{MAX_COLUMNS} columns")
