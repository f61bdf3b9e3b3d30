"""Reading an institution's data (a CSV or Parquet table, an `.npz` of arrays, a folder of
images), with errors that name the file and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedsilo.data.arrays import ArrayData, read_image_folder, read_npz
from fedsilo.errors import DataError
from fedsilo.limits import MAX_COLUMNS, MAX_LINE_BYTES

PARQUET = (".parquet", ".pq")


def read_source(path: str | Path, columns: Sequence[str] | None = None,
                na_values: Sequence[str] = ("?", "")) -> pd.DataFrame | ArrayData:
    """An institution's data by its path: a folder of images (one subfolder per class), an
    `.npz` (arrays `x` and `y`), a Parquet table, or else a CSV table.

    Raises:
        DataError: the path does not exist or its content cannot be read as that kind.
    """
    p = Path(path)
    if p.is_dir():
        return read_image_folder(p)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    if p.suffix.lower() == ".npz":
        return read_npz(p)
    if p.suffix.lower() in PARQUET:
        return read_parquet(p, na_values)
    return read_table(p, columns, na_values)


def read_parquet(path: Path, na_values: Sequence[str] = ("?", "")) -> pd.DataFrame:
    """A Parquet table (pyarrow); text cells equal to a missing-value marker become missing.

    Raises:
        DataError: not a Parquet file, too many columns, or no rows.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        if meta.num_columns > MAX_COLUMNS:
            raise DataError(f"{path.name}: {meta.num_columns} columns; fedsilo reads tables "
                            f"of at most {MAX_COLUMNS} columns")
        frame = pq.read_table(path).to_pandas()
    except DataError:
        raise
    except Exception as e:  # pyarrow's errors may quote the file's bytes
        raise DataError(f"cannot read {path.name} as Parquet ({type(e).__name__})") from None
    if frame.empty:
        raise DataError(f"{path.name} holds no rows")
    markers = [v for v in na_values if v != ""] + [""]
    for column in frame.select_dtypes(include=["object", "string", "category"]).columns:
        values = frame[column].astype("object")
        stripped = values.map(lambda v: v.strip() if isinstance(v, str) else v)
        frame[column] = values.where(~stripped.isin(markers), np.nan)
    frame.attrs["file"] = path.name
    return frame


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
