"""Writing to the results folder: when the operating system refuses (disk full, read-only
file system, a file where a folder should be), the run stops with a ConfigError that names
the path and what to do — exit code 2 — instead of a traceback."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedsilo.errors import ConfigError

_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_error(path: Path | str, what: str, error: OSError) -> ConfigError:
    """The ConfigError for an OSError met while writing `what` at `path`."""
    where = error.filename or path
    reason = os.strerror(error.errno) if error.errno else type(error).__name__
    advice = ("free space on that disk, or set run.output_dir (--output) to another folder"
              if error.errno in _FULL else
              "set run.output_dir (--output) to a folder this process can write")
    return ConfigError(f"cannot write {what} at {where}: {reason}; {advice}")


@contextmanager
def writing(path: Path | str, what: str = "the results") -> Iterator[None]:
    """Turn an OSError raised inside the block into `disk_error`."""
    try:
        yield
    except OSError as e:
        raise disk_error(path, what, e) from None
