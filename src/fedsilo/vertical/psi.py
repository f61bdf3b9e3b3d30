"""Private set intersection (ECDH-PSI) to align the rows of a vertical federation.

The Diffie-Hellman / Meadows protocol (as in FATE, NVFlare, OpenMined) over the prime-order
subgroup of edwards25519, with libsodium's own group operations (PyNaCl bindings; PyNaCl does not
expose ristretto255, so points are ed25519 encodings: `from_uniform` clears the cofactor and
`scalarmult_ed25519_noclamp` refuses non-canonical, small-order and off-subgroup points).

    H(x)   = from_uniform(SHA-512("fedsilo/psi/v1" || len(salt) || salt || utf8(x))[:32])
    x^k    = scalarmult_noclamp(k, x), k a secret scalar, uniform in [1, L)

Two parties, the hub A (the label holder) and a responder B, one public salt per run:

1. A sends `request = A.blinded_ids()`: H(a)^α for its IDs, in a secret random order.
2. B answers `PsiResponse(double=B.blind(request), own=B.blinded_ids())`: (H(a)^α)^β in the order
   received (shuffled with `shuffle=True` for cardinality-only) and H(b)^β in a random order.
3. A computes (H(b)^β)^α and compares: `A.match(response)` pairs each of A's shared rows with a
   position in B's `own` list (or `A.cardinality(response)` counts them when B shuffled).
4. A fixes one secret random order of the shared rows (`A.align`) and sends B the positions, in
   that order, in B's `own` list; `B.rows_for(positions)` maps them back to B's rows. Row k of
   every party is then the same customer.

More parties: the hub runs steps 1-3 with every B_i (one request for all), intersects the
results over its own rows, and sends each B_i the positions of the rows shared by *all* parties.

What each party learns (semi-honest parties, DDH on edwards25519, H a random oracle):

- the hub A: |B_i| for every i, and which of its own IDs each B_i holds (the pairwise
  intersections A∩B_i, a curious hub learns them all); nothing about B_i's other IDs, which it
  sees only as uniformly random group elements. Cardinality-only: |A∩B| and |B|, not which rows.
- a responder B_i: |A|, and which of its own IDs are in the final intersection (of all parties),
  in an order drawn by A at random; nothing about A's other IDs or about the other responders
  (not even the pairwise A∩B_i sizes). Cardinality-only: |A| only, unless A tells it the count.
- the wire: group elements and positions only, never an ID or an unkeyed hash of one.

Not covered: a malicious party (A may send B positions of rows that did not match; either may
query a chosen ID set), collusion of a responder with the hub (they share what they learn), and
the sizes of the sets (pad the ID lists with random dummies if they are secret).

The functions here do no I/O: messages are `list[bytes]` of 32-byte elements (`pack`/`unpack`
make one `bytes` of them) and positions are `list[int]`, so the same code runs in simulation
and over a transport.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import nacl.bindings as sodium
import nacl.exceptions
import numpy as np

from fedsilo.errors import DataError, ProtocolError

ELEMENT_BYTES = 32
DOMAIN = b"fedsilo/psi/v1"
MIN_SALT_BYTES = 16
# the overlap check: sets of at least LARGE IDs each sharing fewer than MIN_OVERLAP of the smaller
LARGE = 100
MIN_OVERLAP = 0.01
_CHUNK = 4096
T = TypeVar("T")


def new_salt() -> bytes:
    """A fresh public salt for one run (the hub draws it and sends it to every party)."""
    return os.urandom(32)


def hash_to_group(item: str, salt: bytes) -> bytes:
    """H(item): an element of the prime-order subgroup, domain-separated and salted."""
    digest = hashlib.sha512(DOMAIN + len(salt).to_bytes(8, "little") + salt
                            + item.encode("utf-8")).digest()
    return bytes(sodium.crypto_core_ed25519_from_uniform(digest[:ELEMENT_BYTES]))


def pack(elements: Sequence[bytes]) -> bytes:
    """One `bytes` of 32-byte group elements, for the wire."""
    return b"".join(elements)


def unpack(data: bytes) -> list[bytes]:
    """The 32-byte elements of `pack`; refuses a length that is not a multiple of 32."""
    if len(data) % ELEMENT_BYTES:
        raise ProtocolError(f"PSI message of {len(data)} bytes: not a list of "
                            f"{ELEMENT_BYTES}-byte group elements")
    return [data[i:i + ELEMENT_BYTES] for i in range(0, len(data), ELEMENT_BYTES)]


@dataclass(frozen=True)
class PsiResponse:
    """A responder's answer to the hub's request."""

    double: list[bytes]  # (H(a)^α)^β, in the request's order (shuffled: cardinality-only)
    own: list[bytes]     # H(b)^β for the responder's IDs, in a random order


@dataclass(frozen=True)
class Alignment:
    """The hub's result: its rows in the common order, and the positions to send each peer."""

    rows: list[int]                      # the hub's row indices, row k = customer k
    positions: dict[str, list[int]]      # per peer: positions in its `own` list, same order


class PsiParty:
    """One party's side of ECDH-PSI: its IDs, its secret scalar and its secret shuffles.

    `rng` (a numpy Generator) makes a simulation reproducible; it is *not* a cryptographic
    source, so leave it None (the OS CSPRNG) for real data. `workers` threads share the group
    operations (cffi releases the GIL around the libsodium calls)."""

    def __init__(self, ids: Sequence[str], salt: bytes, rng: np.random.Generator | None = None,
                 *, name: str = "party", workers: int = 1) -> None:
        if len(salt) < MIN_SALT_BYTES:
            raise DataError(f"PSI salt of {len(salt)} bytes: use at least {MIN_SALT_BYTES} "
                            f"random bytes (psi.new_salt())")
        self.name = name
        self.ids = list(ids)
        self._check_ids()
        self._salt = bytes(salt)
        self._rng = rng
        self._workers = max(1, int(workers))
        self._key = self._scalar()
        self._order: list[int] | None = None   # row of each element of blinded_ids()
        self._blinded: list[bytes] | None = None
        self._peer_size: int | None = None

    # -- randomness ------------------------------------------------------------------------
    def _random_bytes(self, n: int) -> bytes:
        return os.urandom(n) if self._rng is None else self._rng.bytes(n)

    def _scalar(self) -> bytes:
        while True:
            k = bytes(sodium.crypto_core_ed25519_scalar_reduce(self._random_bytes(64)))
            if any(k):
                return k

    def _permutation(self, n: int) -> list[int]:
        if self._rng is not None:
            return [int(i) for i in self._rng.permutation(n)]
        perm = list(range(n))
        secrets.SystemRandom().shuffle(perm)
        return perm

    # -- group operations ------------------------------------------------------------------
    def _power_chunk(self, elements: Sequence[bytes]) -> list[bytes]:
        key, mul = self._key, sodium.crypto_scalarmult_ed25519_noclamp
        out = []
        for e in elements:
            if len(e) != ELEMENT_BYTES:
                raise ProtocolError(f"PSI element of {len(e)} bytes, expected {ELEMENT_BYTES}")
            try:
                out.append(bytes(mul(key, e)))
            except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError,
                    nacl.exceptions.TypeError) as err:
                raise ProtocolError("PSI element is not a point of the prime-order group "
                                    "(non-canonical, small order or off the subgroup)") from err
        return out

    def _hash_chunk(self, items: Sequence[str]) -> list[bytes]:
        return self._power_chunk([hash_to_group(x, self._salt) for x in items])

    def _map(self, fn: Callable[[Sequence[T]], list[bytes]], items: Sequence[T]) -> list[bytes]:
        if self._workers == 1 or len(items) < 2 * _CHUNK:
            return fn(items)
        chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
        with ThreadPoolExecutor(self._workers) as pool:
            return [e for part in pool.map(fn, chunks) for e in part]

    # -- messages --------------------------------------------------------------------------
    def blinded_ids(self) -> list[bytes]:
        """H(x)^k for this party's IDs in a secret random order: the hub's request, or a
        responder's `own` list (computed once, the same list every time)."""
        if self._blinded is None:
            self._order = self._permutation(len(self.ids))
            self._blinded = self._map(self._hash_chunk, [self.ids[i] for i in self._order])
        return list(self._blinded)

    def blind(self, elements: Sequence[bytes], *, shuffle: bool = False) -> list[bytes]:
        """The peer's elements raised to this party's key, in the order received, or in a fresh
        random order when `shuffle` (cardinality-only: the peer learns the count, not which)."""
        out = self._map(self._power_chunk, list(elements))
        self._peer_size = len(out)
        if shuffle:
            out = [out[i] for i in self._permutation(len(out))]
        return out

    def respond(self, request: Sequence[bytes], *, cardinality_only: bool = False) -> PsiResponse:
        """A responder's answer to the hub's `request` (steps 2 of the protocol)."""
        return PsiResponse(self.blind(request, shuffle=cardinality_only), self.blinded_ids())

    def _doubles(self, response: PsiResponse) -> tuple[list[bytes], list[bytes]]:
        mine = self.blinded_ids()
        if len(response.double) != len(mine):
            raise ProtocolError(f"PSI response has {len(response.double)} doubly-blinded "
                                f"elements for a request of {len(mine)}")
        return list(response.double), self._map(self._power_chunk, list(response.own))

    def match(self, response: PsiResponse) -> dict[int, int]:
        """Hub: {own row: position in the peer's `own` list} for every shared ID."""
        double, theirs = self._doubles(response)
        where = {e: j for j, e in enumerate(theirs)}
        assert self._order is not None
        out: dict[int, int] = {}
        for i, e in enumerate(double):
            j = where.get(e)
            if j is not None:
                out[self._order[i]] = j
        return out

    def cardinality(self, response: PsiResponse) -> int:
        """Hub, cardinality-only: how many IDs the two parties share."""
        double, theirs = self._doubles(response)
        return len(set(double) & set(theirs))

    def align(self, matches: Mapping[str, Mapping[int, int]], peer_sizes: Mapping[str, int],
              *, min_overlap: float = MIN_OVERLAP) -> Alignment:
        """Hub: the rows shared by every party (`matches`: per peer, the result of `match`),
        in one secret random order, and the positions to send each peer."""
        for peer, m in matches.items():
            size = peer_sizes[peer]
            check_overlap(self.ids, set(m), size, self.name, f"{peer} ({size:,} IDs)",
                          min_overlap)
        shared = set(range(len(self.ids)))
        for m in matches.values():
            shared &= set(m)
        rows = sorted(shared)
        rows = [rows[i] for i in self._permutation(len(rows))]
        return Alignment(rows, {peer: [m[r] for r in rows] for peer, m in matches.items()})

    def rows_for(self, positions: Sequence[int], *, min_overlap: float = MIN_OVERLAP) -> list[int]:
        """Responder: its own rows for the hub's `positions`, in the hub's order."""
        if self._order is None:
            raise ProtocolError("PSI positions before this party sent its blinded IDs")
        n = len(self._order)
        if len(set(positions)) != len(positions) or any(not 0 <= p < n for p in positions):
            raise ProtocolError(f"PSI positions must be distinct and in [0, {n})")
        rows = [self._order[p] for p in positions]
        size = self._peer_size or 0
        check_overlap(self.ids, set(rows), size, self.name,
                      f"the hub ({size:,} IDs) and any other party", min_overlap)
        return rows

    def _check_ids(self) -> None:
        for k, x in enumerate(self.ids):
            if not isinstance(x, str):
                raise DataError(f"{self.name}: PSI IDs must be strings; row {k} is a "
                                f"{type(x).__name__}")
        counts = Counter(self.ids)
        dup = [x for x, c in counts.items() if c > 1]
        if dup:
            first = dup[0]
            rows = [k for k, x in enumerate(self.ids) if x == first][:3]
            advice = "PSI aligns one row per ID: deduplicate or aggregate the rows first"
            raise DataError(
                f"{self.name}: {len(dup):,} ID(s) occur more than once (e.g. {first!r} at rows "
                f"{', '.join(map(str, rows))}); {advice}",
                public=f"{self.name}: {len(dup):,} ID(s) occur more than once; {advice}")


def id_pattern(item: str) -> str:
    """The shape of an ID: letters -> 'A' (a) by case, digits -> '9', the rest kept."""
    s = re.sub(r"[A-Z]", "A", item)
    s = re.sub(r"[a-z]", "a", s)
    return re.sub(r"[0-9]", "9", s)


def check_overlap(ids: Sequence[str], matched: Iterable[int], peer_size: int, name: str,
                  peer: str, min_overlap: float = MIN_OVERLAP) -> None:
    """DataError when two large sets share (almost) nothing: a formatting mismatch, most often.
    The message shows only this party's own IDs."""
    matched = set(matched)
    n = len(ids)
    if min_overlap <= 0 or min(n, peer_size) < LARGE:
        return
    if len(matched) >= max(1, min_overlap * min(n, peer_size)):
        return
    missing = [x for k, x in enumerate(ids) if k not in matched]
    patterns = Counter(id_pattern(x) for x in missing).most_common(2)
    shape = "; ".join(f"{p!r} for {c:,}" for p, c in patterns)
    examples = ", ".join(repr(x) for x in missing[:2])
    shared = f"{name}: {len(matched):,} of {n:,} IDs are shared with {peer}."
    advice = ("check formatting (leading zeros, prefixes, case, whitespace) and that both "
              "sides use the same ID column")
    raise DataError(f"{shared} IDs look like {examples} here (shape {shape}): {advice}",
                    public=f"{shared} IDs here have the shape {shape}: {advice}")


def intersect(parties: Mapping[str, Sequence[str]], salt: bytes | None = None, *,
              hub: str | None = None, rng: np.random.Generator | None = None,
              min_overlap: float = MIN_OVERLAP, workers: int = 1) -> dict[str, list[int]]:
    """Runs the whole exchange in process: per party, the row indices of the IDs shared by all
    parties, in one common order (row k of every party is the same customer).

    `hub` is the label holder (default: the first party); `rng` seeds every party (simulation
    only, see PsiParty)."""
    if len(parties) < 2:
        raise DataError(f"PSI needs at least two parties, got {len(parties)}")
    names = list(parties)
    hub = names[0] if hub is None else hub
    if hub not in parties:
        raise DataError(f"PSI hub {hub!r} is not one of the parties {names}")
    salt = new_salt() if salt is None else salt
    seeds = (None if rng is None else rng.integers(0, 2**63, size=len(names)))

    def party(i: int, name: str) -> PsiParty:
        r = None if seeds is None else np.random.default_rng(int(seeds[i]))
        return PsiParty(parties[name], salt, r, name=name, workers=workers)

    made = {name: party(i, name) for i, name in enumerate(names)}
    a = made[hub]
    request = a.blinded_ids()
    matches, sizes = {}, {}
    for name, b in made.items():
        if name == hub:
            continue
        response = b.respond(request)
        matches[name], sizes[name] = a.match(response), len(response.own)
    alignment = a.align(matches, sizes, min_overlap=min_overlap)
    out = {hub: alignment.rows}
    for name, positions in alignment.positions.items():
        out[name] = made[name].rows_for(positions, min_overlap=min_overlap)
    return {name: out[name] for name in names}
