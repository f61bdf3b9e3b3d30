"""Which cohorts a SecAgg(+) Shamir threshold fits: every institution must have at least t
neighbours (to rebuild its secrets) and t must exceed half of them (so the shares a survivor
reveals never rebuild both of a neighbour's secrets). Counted on the graph the round really
uses: with an odd cohort and odd k no k-regular graph exists and everyone gets k + 1."""

from __future__ import annotations

from fedsilo.errors import ConfigError, SecureAggregationAborted


def neighbourhood(cohort: int, neighbours: int | None) -> int:
    """Each institution's number of neighbours on the ring graph of `cohort` institutions:
    k (None: everyone), at most the others, k + 1 when both the cohort and k are odd."""
    if neighbours is None or neighbours >= cohort - 1:
        return max(cohort - 1, 0)
    return neighbours + 1 if cohort % 2 == 1 and neighbours % 2 == 1 else neighbours


def majority(threshold: int, neighbourhood: int) -> bool:
    """Whether t shares exceed half of the neighbourhood (the core SecAgg condition)."""
    return 2 * threshold > neighbourhood


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
    if not majority(threshold, k):
        odd = (f": with {cohort} institutions and {neighbours} neighbours each the ring "
               f"gives everyone {k}" if neighbours is not None and k == neighbours + 1 else "")
        raise ConfigError(f"threshold {threshold} must exceed half the neighbourhood "
                          f"({k}){odd}")
    return k
