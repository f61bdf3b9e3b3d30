"""What may be written to the run store and served from it: finite numbers only (NaN and
infinities become missing values, so every JSON the store holds or the dashboard serves is
strict JSON), and strings that fit their columns."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

_HASH = 16  # hex digits of SHA-256 that keep a shortened string unique


def finite(value: Any) -> float | None:
    """`value` as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def clean(value: Any) -> Any:
    """`value` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, (float, np.floating)):
        return finite(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def strict_json(value: Any, sort_keys: bool = False) -> str:
    """JSON any strict parser (a browser's JSON.parse) accepts: no NaN, no Infinity."""
    return json.dumps(clean(value), sort_keys=sort_keys, default=str, allow_nan=False)


def fit(text: str, size: int) -> str:
    """`text` if it fits a column of `size` characters; else its start, '~' and the first
    hex digits of its SHA-256 (the same text always gives the same shortened key)."""
    if len(text) <= size:
        return text
    tail = hashlib.sha256(text.encode()).hexdigest()[:_HASH]
    return f"{text[:size - _HASH - 1]}~{tail}"
