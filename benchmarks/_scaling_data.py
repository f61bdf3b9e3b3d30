"""Synthetic institutions for ray_scaling.py: each made where it is loaded, from its name
(a data.loader: `load(name, args)`), 64 features, 10 classes from one fixed linear teacher.

`rows` and `split` need numpy and scikit-learn only: Flower's side (_flower_scaling.py, in its
own venv) makes the same rows and the same train/test split as fedsilo's."""

from __future__ import annotations

import hashlib
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FEATURES, CLASSES, ROWS, TEST_FRACTION = 64, 10, 40, 0.25
TEACHER = np.random.default_rng(0).normal(size=(FEATURES, CLASSES))


def name(i: int) -> str:
    """Institution `i`'s name (the same on both sides)."""
    return f"inst-{i:05d}"


def rows(name: str, n: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Institution `name`'s `n` rows (seeded by its name): float32 features, int labels."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    return x, (x @ TEACHER).argmax(axis=1)


def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """`args["rows"]` rows for institution `name` (fedsilo's data.loader)."""
    import pandas as pd

    x, y = rows(name, int(args["rows"]))
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(FEATURES)])
    frame["y"] = y
    return frame


def split(name: str, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices as fedsilo splits this institution (data/prepare.py:
    scikit-learn's train_test_split, stratified where every class has 2 or more rows, seeded
    by core/rng.py's derive_seed(run seed, name, "split"))."""
    from sklearn.model_selection import train_test_split

    key = f"{seed}/{name}/split".encode()
    state = (int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1) % 2**32
    stratify = y if np.unique(y, return_counts=True)[1].min() >= 2 else None
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                                   stratify=stratify, random_state=state)
    return np.asarray(train), np.asarray(test)
