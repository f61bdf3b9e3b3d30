"""The audit trail: one entry per round — who contributed, the SHA-256 of each update received
(masked, under secure aggregation) and of the resulting global model — chained by hashing
each entry together with the previous entry's hash, so that editing, removing or reordering
any row breaks every hash after it.

    hash_r = SHA-256(hash_(r-1) || canonical JSON of entry_r),   hash_0 = "0" * 64

An entry also holds the SHA-256 of the round's recorded metrics (round row and
per-institution values), the privacy spent, the SHA-256 of the run's stored config and its
planned round count. The server signs every hash (store/signing.py), and seals the chain
with a signed final entry (how the run ended, its number of rounds, its final model), so a
recomputed chain (no server key) and a truncated one are caught.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedsilo.engine.events import RoundEvent
from fedsilo.store.schema import participation, size
from fedsilo.store.values import fit

GENESIS = "0" * 64
INSTITUTION = size(participation.c.institution)


def entry_of(event: RoundEvent) -> dict[str, Any]:
    """The audited facts of one round (institution names as the store holds them: `fit`)."""
    return {"round": event.round, "version": event.version,
            "contributors": {fit(c, INSTITUTION): event.digests.get(c, "")
                             for c in sorted(event.participants)},
            "rejected": {fit(c, INSTITUTION): r for c, r in sorted(event.rejected.items())
                         if c not in event.participants},
            "model": event.model_digest}


def canonical(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def chain_hash(prev_hash: str, entry_json: str) -> str:
    return hashlib.sha256((prev_hash + entry_json).encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """The result of verifying a run's chain: ok, or the first round that fails and why."""

    ok: bool
    rounds: int
    problem: str = ""
    round: int | None = None
    detail: str = ""  # what the signatures were checked against, whether the run is sealed


def verify_chain(rows: Sequence[Mapping[str, Any]],
                 facts: Mapping[int, Mapping[str, Any]] | None = None) -> Verdict:
    """Check every link of a run's chain (rows ordered by round), and that each entry agrees
    with the recorded facts of its round (`facts`: round -> entry rebuilt from the other
    tables), so an edit of the audit table or of the round tables is caught."""
    prev = GENESIS
    for i, row in enumerate(rows):
        rnd = int(row["round"])
        if row["prev_hash"] != prev:
            return Verdict(False, i, f"round {rnd}: previous-hash link broken (a row was "
                                     f"removed, reordered or rewritten)", rnd)
        if chain_hash(prev, row["entry"]) != row["hash"]:
            return Verdict(False, i, f"round {rnd}: entry does not match its hash (the audit "
                                     f"row was edited)", rnd)
        if facts is not None:
            recorded = facts.get(rnd)
            if recorded is None or canonical(recorded) != row["entry"]:
                return Verdict(False, i, f"round {rnd}: the round's recorded "
                                         f"{_differing(recorded, row['entry'])} differ from "
                                         f"the audited entry", rnd)
        prev = row["hash"]
    return Verdict(True, len(rows))


NAMES = {"contributors": "participants or digests", "rejected": "participants or digests",
         "model": "model digest", "version": "version", "metrics": "metrics",
         "epsilon": "privacy spent (epsilon)", "config": "config", "planned": "planned rounds"}


def _differing(recorded: Mapping[str, Any] | None, entry_json: str) -> str:
    """Which facts of a round differ from its audited entry, in words."""
    if recorded is None:
        return "round row"
    try:
        entry = json.loads(entry_json)
    except ValueError:
        return "facts"
    keys = sorted(set(recorded) | set(entry))
    words = dict.fromkeys(NAMES.get(k, k) for k in keys if recorded.get(k) != entry.get(k))
    return ", ".join(words) or "facts"
