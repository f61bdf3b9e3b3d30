"""Synthetic institutions for ray_scaling.py: each made where it is loaded, from its name
(a data.loader: `load(name, args)`), 64 features, 10 classes from one fixed linear teacher."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

FEATURES, CLASSES = 64, 10
TEACHER = np.random.default_rng(0).normal(size=(FEATURES, CLASSES))


def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """`args["rows"]` rows for institution `name` (seeded by its name)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.normal(size=(int(args["rows"]), FEATURES)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(FEATURES)])
    frame["y"] = (x @ TEACHER).argmax(axis=1)
    return frame
