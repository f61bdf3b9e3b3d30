"""Simulated bad participants, to test robust aggregation: an `Attacker` wraps an honest
institution and poisons its fit replies after its client half has run (what a malicious
institution could send). Simulation only; never part of a deployment."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from fedsilo.aggregation.mean import rescaled
from fedsilo.core.messages import Reply, Task, TaskKind
from fedsilo.core.rng import generator
from fedsilo.errors import ConfigError
from fedsilo.transport.inprocess import Handler

ATTACKS = ("sign_flip", "scale")


class Attacker:
    """An institution whose updates are multiplied by -scale ('sign_flip') or scale ('scale').

    Args:
        inner: the honest institution (it still trains on its data).
        kind: 'sign_flip' or 'scale'.
        scale: the factor's magnitude.
    """

    def __init__(self, inner: Handler, kind: str, scale: float) -> None:
        if kind not in ATTACKS:
            raise ConfigError(f"attack: kind must be one of {ATTACKS}, got '{kind}'")
        self.inner = inner
        self.factor = -scale if kind == "sign_flip" else scale

    def handle(self, task: Task) -> Reply:
        reply = self.inner.handle(task)
        if task.kind is not TaskKind.FIT or reply.update is None:
            return reply
        poisoned = dataclasses.replace(reply, update=rescaled(reply.update, self.factor))
        sign = getattr(self.inner, "signed", None)  # it signs what it sends, as a member would
        return sign(task, poisoned) if sign is not None else poisoned


def with_attackers(institutions: Mapping[str, Handler], fraction: float, kind: str,
                   scale: float, seed: int) -> tuple[dict[str, Handler], list[str]]:
    """The institutions with round(fraction · K) of them (drawn with the run seed) turned
    into attackers, and the attackers' names."""
    names = sorted(institutions)
    count = int(np.floor(fraction * len(names) + 0.5))
    picked = generator(seed, "attackers").choice(len(names), size=count, replace=False)
    bad = sorted(names[i] for i in picked)
    out: dict[str, Handler] = {n: Attacker(h, kind, scale) if n in bad else h
                               for n, h in institutions.items()}
    return out, bad
