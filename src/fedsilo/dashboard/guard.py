"""Who may read the dashboard.

- Host allow-list (DNS rebinding): a page on evil.example whose name is made to resolve to
  this machine sends `Host: evil.example`; only IP literals, localhost, the bound name, this
  machine's names and the names in $FEDSILO_DASHBOARD_HOSTS (comma-separated) are answered.
- Token: bound to anything but loopback, the data (/api/...) needs a token — given as
  `?token=` in the page's address, or the `X-Fedsilo-Token` header — chosen by whoever starts
  it (`fedsilo dashboard` reads $FEDSILO_DASHBOARD_TOKEN), else generated at start. On
  loopback no token is needed.
- Headers: a Content-Security-Policy with no inline script or style, no framing, no referrer.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs

HOSTS_ENV = "FEDSILO_DASHBOARD_HOSTS"
TOKEN_ENV = "FEDSILO_DASHBOARD_TOKEN"
TOKEN_HEADER = "X-Fedsilo-Token"
WILDCARDS = {"", "0.0.0.0", "::"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the dashboard on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port (an IPv6 literal without brackets)."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class Access:
    """Args:
        names: the host names answered (IP literals always are).
        token: the token the API needs (None: none needed).
    """

    names: frozenset[str]
    token: str | None

    @classmethod
    def for_bind(cls, host: str, token: str | None = None) -> Access:
        """The rules for a dashboard bound to `host`: on loopback no token (unless given);
        elsewhere `token`, else a new random one."""
        names = {"localhost"}
        if host not in WILDCARDS:
            names.add(host.lower())
        names.update(n.strip().lower() for n in os.environ.get(HOSTS_ENV, "").split(",")
                     if n.strip())
        if not is_loopback(host):
            names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
            token = token or secrets.token_urlsafe(24)
        return cls(frozenset(names), token)

    def host_ok(self, header: str | None) -> bool:
        """Whether a request with this Host header is for this dashboard."""
        if not header:
            return False
        name = host_name(header).rstrip(".")
        try:
            ipaddress.ip_address(name)
            return True  # an address, not a name: DNS rebinding needs a name
        except ValueError:
            return name in self.names

    def token_ok(self, query: str, header: str | None) -> bool:
        """Whether the request carries the token, in its query (`token=`) or its
        X-Fedsilo-Token header (always true when none is needed)."""
        if self.token is None:
            return True
        given = header or (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())
