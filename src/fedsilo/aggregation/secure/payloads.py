"""Checks of every SecAgg+ message, both ways: what the server accepts from an institution (a
reply that fails is a dropout, with the reason recorded) and what an institution accepts from
the server (a request that fails is refused). Any JSON shape may arrive; only these pass, as
typed values."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedsilo.aggregation.secure import crypto
from fedsilo.aggregation.secure.shamir import PRIME
from fedsilo.errors import ProtocolError

MAX_SEALED = 1024  # bytes of one sealed pair of shares (about 330 in practice)
MAX_CERT = 8192  # characters of a PEM certificate
MAX_SIGNATURE = 256
MAX_X = 2**31  # Shamir x coordinates: 1 .. number of institutions
HEX = re.compile(f"[0-9a-f]{{1,{len(f'{PRIME:x}')}}}")  # at most the prime's hex digits
ADVERT_CONTEXT = b"fedsilo-secagg-advertise-v1\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProtocolError("secure aggregation: payload is not valid base64") from None


def mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ProtocolError(f"{what} is not a mapping of names")
    return value


def field(m: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in m:
        raise ProtocolError(f"{what}: '{key}' is missing")
    return m[key]


def integer(value: Any, what: str, low: int = 0, high: int = 2**63) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{what} is not an integer in {low}..{high}")
    return value


def names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{what} is not a list of names")
    if len(set(value)) != len(value):
        raise ProtocolError(f"{what} names an institution twice")
    return list(value)


def text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{what} is not a text of at most {limit} characters")
    return value


def blob(value: Any, what: str, limit: int, size: int | None = None) -> bytes:
    """Base64 text of at most `limit` bytes (exactly `size` if given)."""
    raw = text(value, what, 4 * (limit // 3 + 1))
    try:
        data = unb64(raw)
    except ProtocolError:
        raise ProtocolError(f"{what} is not valid base64") from None
    if len(data) > limit or (size is not None and len(data) != size):
        raise ProtocolError(f"{what} is {len(data)} bytes, expected "
                            f"{size if size is not None else f'at most {limit}'}")
    return data


def public_key(value: Any, what: str) -> bytes:
    raw = blob(value, what, 32, 32)
    try:
        crypto.check_public(raw)
    except ProtocolError as e:
        raise ProtocolError(f"{what}: {e}") from None
    return raw


def share_value(value: Any, what: str) -> int:
    """A Shamir share's y as lower-case hex, below the field's prime."""
    if not isinstance(value, str) or not HEX.fullmatch(value) or int(value, 16) >= PRIME:
        raise ProtocolError(f"{what} is not a share (hex below 2^521 - 1)")
    return int(value, 16)


@dataclass(frozen=True)
class Advert:
    """An institution's public keys for one round (c: shares, s: masks), its certificate and
    its signature binding both keys to its name and the round."""

    c_pk: bytes
    s_pk: bytes
    cert: str
    sig: bytes = b""

    def signed(self, round: int, name: str) -> bytes:
        """The bytes the signature covers."""
        return ADVERT_CONTEXT + json.dumps([round, name, b64(self.c_pk),
                                            b64(self.s_pk)]).encode()

    def wire(self) -> dict[str, str]:
        return {"c_pk": b64(self.c_pk), "s_pk": b64(self.s_pk), "cert": self.cert,
                "sig": b64(self.sig)}


def advert(value: Any, who: str) -> Advert:
    m = mapping(value, f"the keys advertised by '{who}'")
    what = f"keys of '{who}'"
    return Advert(public_key(field(m, "c_pk", what), f"{what}: c_pk"),
                  public_key(field(m, "s_pk", what), f"{what}: s_pk"),
                  text(field(m, "cert", what), f"{what}: cert", MAX_CERT),
                  blob(field(m, "sig", what), f"{what}: sig", MAX_SIGNATURE))


def shares(value: Any, who: str, neighbours: Iterable[str]) -> dict[str, str]:
    """A share reply: one sealed pair of shares (base64) for each neighbour, no one else."""
    what = f"the shares of '{who}'"
    sealed = mapping(field(mapping(value, what), "shares", what), what)
    expected = set(neighbours)
    if set(sealed) != expected:
        raise ProtocolError(f"{what} are for {sorted(sealed)}, its neighbours are "
                            f"{sorted(expected)}")
    for v, item in sealed.items():
        blob(item, f"{what} for '{v}'", MAX_SEALED)
    return dict(sealed)


@dataclass(frozen=True)
class Reveal:
    """An unmask reply: shares of self-mask seeds (b) of survivors, of mask keys (s) of
    dropouts, and the neighbours whose sealed shares failed to open (with the reason)."""

    b: dict[str, int]
    s: dict[str, int]
    corrupt: dict[str, str]


def reveal(value: Any, who: str, x: int, survivors: set[str], dropped: set[str]) -> Reveal:
    """Only shares asked of `who`, all at its own coordinate `x`."""
    what = f"the unmask reply of '{who}'"
    m = mapping(value, what)
    out: dict[str, dict[str, int]] = {}
    for kind, allowed in (("b", survivors), ("s", dropped)):
        part = mapping(m.get(kind, {}), f"{what}: '{kind}'")
        if not set(part) <= allowed:
            raise ProtocolError(f"{what} reveals '{kind}' shares of {sorted(set(part) - allowed)}"
                                f", which were not asked")
        out[kind] = {}
        for v, pair in part.items():
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ProtocolError(f"{what}: the share of '{v}' is not [x, y]")
            if integer(pair[0], f"{what}: x of '{v}'", 1, MAX_X) != x:
                raise ProtocolError(f"{what}: the share of '{v}' is at x = {pair[0]}, not at "
                                    f"its own x = {x}")
            out[kind][v] = share_value(pair[1], f"{what}: y of '{v}'")
    corrupt = mapping(m.get("corrupt", {}), f"{what}: 'corrupt'")
    if not set(corrupt) <= survivors | dropped:
        raise ProtocolError(f"{what} reports shares of institutions not asked")
    return Reveal(out["b"], out["s"], {v: str(r)[:300] for v, r in corrupt.items()})


# what an institution accepts from the server -----------------------------------------------

def round_of(payload: Any) -> int:
    return integer(field(mapping(payload, "the request"), "round", "the request"), "round")


@dataclass(frozen=True)
class ShareRequest:
    threshold: int
    x: dict[str, int]  # Shamir coordinate of this institution and of each neighbour
    peers: dict[str, Advert]


def share_request(payload: Any, me: str) -> ShareRequest:
    m = mapping(payload, "the share request")
    peers = mapping(field(m, "peers", "the share request"), "the neighbours' keys")
    xs = mapping(field(m, "x", "the share request"), "the share coordinates")
    if me in peers or set(xs) != {me, *peers}:
        raise ProtocolError("the share request's coordinates are not this institution's and "
                            "its neighbours'")
    x = {v: integer(c, f"the coordinate of '{v}'", 1, MAX_X) for v, c in xs.items()}
    if len(set(x.values())) != len(x):
        raise ProtocolError("the share request gives two institutions the same coordinate")
    return ShareRequest(integer(field(m, "threshold", "the share request"), "threshold"), x,
                        {v: advert(a, v) for v, a in peers.items()})


def unmask_request(payload: Any) -> tuple[set[str], set[str]]:
    """The neighbours the server says survived, and those it says dropped."""
    m = mapping(payload, "the unmask request")
    return (set(names(field(m, "survivors", "the unmask request"), "survivors")),
            set(names(field(m, "dropped", "the unmask request"), "dropped")))


def fit_request(config: Any) -> tuple[int, list[str], dict[str, str]]:
    """A fit task's secure-sum part: its round, the neighbours to mask with, their sealed
    shares for this institution."""
    m = mapping(config, "the fit task's secure-sum configuration")
    inbox = mapping(field(m, "inbox", "the fit task"), "the sealed shares")
    for v, item in inbox.items():
        blob(item, f"the sealed share from '{v}'", MAX_SEALED)
    return (integer(field(m, "round", "the fit task"), "round"),
            names(field(m, "peers", "the fit task"), "peers"), dict(inbox))


def share_plain(data: bytes, x: int) -> tuple[int, int]:
    """The (b, s) shares inside an opened sealed pair, which must be at coordinate `x`."""
    try:
        m = mapping(json.loads(data), "an opened share")
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("an opened share is not JSON") from None
    if integer(field(m, "x", "an opened share"), "its x", 1, MAX_X) != x:
        raise ProtocolError("an opened share is for another coordinate")
    return (share_value(field(m, "b", "an opened share"), "its b"),
            share_value(field(m, "s", "an opened share"), "its s"))
