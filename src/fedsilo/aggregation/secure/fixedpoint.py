"""Fixed-point encoding of floats into the ring of integers mod 2^64 (or 2^32).

A value x becomes trunc(x · 2^frac_bits) mod 2^R (two's complement; truncation lets the
encoding write straight into the ring buffer in one pass, so each value is off by less than
one step of 2^-frac_bits). Sums of encoded values wrap in unsigned R-bit arithmetic and
decode exactly as long as |Σ x| · 2^frac_bits < 2^(R-1): with n contributions each bounded by
`max_abs`, the layer checks n · max_abs · 2^frac_bits < 2^(R-1) up front. Precision:
2^-frac_bits per value (2^-24 ≈ 6e-8 by default). A 32-bit ring halves the bytes sent and the
masking work, for a smaller range × precision budget (e.g. frac_bits 16, max_abs 64, K ≤ 500).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError, MalformedUpdate

RINGS: dict[int, tuple[np.dtype, np.dtype]] = {
    64: (np.dtype(np.uint64), np.dtype(np.int64)),
    32: (np.dtype(np.uint32), np.dtype(np.int32))}


@dataclass(frozen=True)
class FixedPoint:
    frac_bits: int = 24
    max_abs: float = 2.0**30
    ring_bits: int = 64

    def __post_init__(self) -> None:
        if self.ring_bits not in RINGS:
            raise ConfigError(f"fixed point: ring_bits must be 32 or 64, got {self.ring_bits}")
        if not 0 < self.frac_bits < min(52, self.ring_bits - 1):
            raise ConfigError(f"fixed point: frac_bits must be in 1..{min(51, self.ring_bits - 2)}"
                              f" for a {self.ring_bits}-bit ring, got {self.frac_bits}")
        if not self.max_abs > 0:
            raise ConfigError(f"fixed point: max_abs must be > 0, got {self.max_abs}")
        if self.max_abs * 2.0**self.frac_bits >= 2.0**(self.ring_bits - 1):
            raise ConfigError(f"fixed point: max_abs {self.max_abs} at 2^-{self.frac_bits} "
                              f"does not fit a {self.ring_bits}-bit ring")

    @property
    def dtype(self) -> np.dtype:
        """The ring's unsigned integer type."""
        return RINGS[self.ring_bits][0]

    @property
    def precision(self) -> float:
        return 2.0**-self.frac_bits

    def check_headroom(self, contributions: int) -> None:
        """Raise ConfigError if `contributions` values of max_abs could overflow the ring."""
        if contributions * self.max_abs * 2.0**self.frac_bits >= 2.0**(self.ring_bits - 1):
            raise ConfigError(
                f"fixed point: {contributions} contributions of |x| <= {self.max_abs} at "
                f"2^-{self.frac_bits} precision overflow a {self.ring_bits}-bit ring; lower "
                f"max_abs or frac_bits")

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Ring elements of `x`. Raises MalformedUpdate beyond ±max_abs or non-finite."""
        out = np.empty(np.shape(x), self.dtype)
        self.encode_into(np.asarray(x), out)
        return out

    def encode_into(self, x: np.ndarray, out: np.ndarray) -> None:
        """Encode `x` into the ring array `out` (same size) in one pass."""
        if x.size:
            low, high = float(np.min(x)), float(np.max(x))  # NaN propagates into both
            if not (np.isfinite(low) and np.isfinite(high)):
                raise MalformedUpdate("fixed point: NaN or Inf cannot be encoded")
            if max(-low, high) > self.max_abs:
                raise MalformedUpdate(f"fixed point: |value| {max(-low, high):.3g} exceeds "
                                      f"max_abs {self.max_abs:.3g}")
        signed = RINGS[self.ring_bits][1]
        np.multiply(x.reshape(-1), 2.0**self.frac_bits, out=out.reshape(-1).view(signed),
                    casting="unsafe")

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """Float64 values of (summed) ring elements."""
        return np.multiply(ring.view(RINGS[self.ring_bits][1]), 2.0**-self.frac_bits,
                           dtype=np.float64)  # one pass, no int-to-float temporary
