"""The [data] levels a secure run needs declared: without them each institution's categories
would leave it in the clear (config/schema.py checks a config, engine/secure_prepare.py the
schema of a run)."""

from __future__ import annotations

import json
import re


def levels_needed(secure: str, missing: list[str]) -> str:
    """Why a secure run without declared levels is refused, and the TOML line to add (column
    names only: the server never sees, and never quotes, an institution's values)."""
    keys = ", ".join(f"{_toml_key(c)} = [...]" for c in missing)
    return (f"aggregation.secure = '{secure}' sums the preprocessing statistics securely and "
            f"needs the levels of {missing} declared (otherwise each institution's categories "
            f"would leave it in the clear); add to [data]: levels = {{ {keys} }}")


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
