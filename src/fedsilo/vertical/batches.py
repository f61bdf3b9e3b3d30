"""The mini-batch order every party of a vertical run derives from the shared seed (no message
carries it)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

SeedLike = int | Sequence[int] | np.random.SeedSequence | None


def batch_order(n: int, batch_size: int, epochs: int, seed: SeedLike) -> Iterator[np.ndarray]:
    """The shared mini-batch order: for each epoch a seeded permutation of range(n), cut into
    batches of `batch_size` (the last one shorter). Every party derives the same order."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield perm[start:start + batch_size]
