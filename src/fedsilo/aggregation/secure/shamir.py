"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A share is (x, y) with x in 1..n; any t shares recover the secret, fewer reveal nothing
(information-theoretically). Polynomial coefficients come from `secrets` (the OS CSPRNG).
"""

from __future__ import annotations

import secrets

from fedsilo.errors import SecureAggregationAborted

PRIME = 2**521 - 1  # a Mersenne prime, larger than any 32-byte secret
SECRET_BYTES = 32


def split(secret: bytes, threshold: int, xs: list[int]) -> list[tuple[int, int]]:
    """Shares of `secret` at the points `xs` (distinct, non-zero); `threshold` recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"shamir: secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"shamir: threshold {threshold} not in 1..{len(xs)}")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME)
                                                for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def combine(shares: list[tuple[int, int]], threshold: int) -> bytes:
    """The secret from at least `threshold` shares (Lagrange interpolation at 0).

    Raises:
        SecureAggregationAborted: fewer than `threshold` distinct shares.
    """
    points = dict(shares)
    if len(points) < threshold:
        raise SecureAggregationAborted(f"shamir: {len(points)} shares, need {threshold}")
    chosen = list(points.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(chosen):
        num, den = 1, 1
        for j, (xj, _) in enumerate(chosen):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME  # den^-1 mod p
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise SecureAggregationAborted("shamir: shares do not agree on a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")
