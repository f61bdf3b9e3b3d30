"""Which cohorts a SecAgg(+) Shamir threshold fits: every institution must have at least t
neighbours (to rebuild its secrets) and t must exceed half of them (so the shares a survivor
reveals never rebuild both of a neighbour's secrets)."""

from __future__ import annotations

from fedsilo.errors import ConfigError, SecureAggregationAborted


def neighbourhood(cohort: int, neighbours: int | None) -> int:
    """Each institution's number of neighbours: k (None: everyone), at most the others."""
    return cohort - 1 if neighbours is None else min(neighbours, cohort - 1)


def check_cohort(threshold: int, neighbours: int | None, cohort: int) -> int:
    """The neighbourhood size of a round of `cohort` institutions.

    Raises:
        SecureAggregationAborted: too few institutions for threshold t (t + 1 needed).
        ConfigError: t does not exceed half the neighbourhood.
    """
    k = neighbourhood(cohort, neighbours)
    if threshold > k:
        raise SecureAggregationAborted(
            f"threshold {threshold} needs at least {threshold + 1} institutions in a round "
            f"(each one's key shares go to {threshold} or more neighbours), {cohort} in the "
            f"cohort")
    if 2 * threshold <= k:
        raise ConfigError(f"threshold {threshold} must exceed half the neighbourhood ({k})")
    return k
