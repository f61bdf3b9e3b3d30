"""Seed derivation: every random choice is keyed by (run seed, round, client, purpose).

The same key always yields the same stream, whatever ran before it, so a run with a fixed seed
gives the same numbers twice and one client's randomness never depends on another's.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(run_seed: int, *parts: str | int) -> int:
    """A 63-bit seed derived from the run seed and a key (fits numpy and torch)."""
    key = "/".join([str(int(run_seed)), *(str(p) for p in parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def generator(run_seed: int, *parts: str | int) -> np.random.Generator:
    """A numpy Generator for the key (run seed, *parts). Not for cryptographic use."""
    return np.random.default_rng(derive_seed(run_seed, *parts))
