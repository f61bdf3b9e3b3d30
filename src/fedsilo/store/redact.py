"""Database URLs without their passwords: every message, log line and record that names a
run store shows `postgresql+psycopg://user:***@host/db`, never the password."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import make_url

HIDDEN = "***"
_USERINFO = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except Exception:  # not a URL SQLAlchemy parses: take what sits between ':' and '@'
        found = _USERINFO.search(url)
        return unquote(found.group(2)) if found else None


def redact_url(url: str) -> str:
    """`url` with its password, if it has one, replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _USERINFO.sub(rf"\g<1>{HIDDEN}\g<3>", url)


def scrub(text: str, url: str) -> str:
    """`text` (an error message about `url`) with the URL's password removed, however the
    message spells it (as written in the URL, or decoded)."""
    password = _password(url)
    found = _USERINFO.search(url)
    for secret in {password, found.group(2) if found else None}:
        if secret:
            text = text.replace(secret, HIDDEN)
    return text


def redact_config(config: Any) -> Any:
    """A run config (as JSON data) with the password of its [store] url hidden."""
    if not isinstance(config, dict) or not isinstance(config.get("store"), dict):
        return config
    url = config["store"].get("url")
    if not isinstance(url, str):
        return config
    return {**config, "store": {**config["store"], "url": redact_url(url)}}
