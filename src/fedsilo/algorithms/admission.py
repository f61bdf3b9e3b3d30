"""What the server admits from an institution, checked as each reply arrives against what the
server knows:

- metrics: at most `MAX_METRICS`, names of 1-64 characters of [A-Za-z0-9_.:-], values finite
  and inside the metric's range (accuracy in [0, 1], losses and errors >= 0, ...);
- example counts: at least 1 and at most the rows the institution reported at the prepare
  stage (training rows for a fit, test rows for an evaluation); an institution that took no
  part in it is held to the largest count on record; one whose statistics were refused there
  is refused in every round, with that reason;
- the aggregation weight, where the stack carries it in the clear: exactly the one its
  example count gives (the server derives it; it does not trust a number sent beside it).

A reply that breaks a rule is refused with a reason that names the rule, never a value.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedsilo.aggregation.base import Layer, find_staged
from fedsilo.aggregation.mean import find_mean
from fedsilo.core.messages import Reply
from fedsilo.errors import MalformedUpdate, ProtocolError

MAX_METRICS = 64
METRIC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
RANGES: dict[str, tuple[float, float]] = {  # the metrics fedsilo computes
    "accuracy": (0.0, 1.0), "auc": (0.0, 1.0), "r2": (-math.inf, 1.0),
    "log_loss": (0.0, math.inf), "mse": (0.0, math.inf), "rmse": (0.0, math.inf),
    "mae": (0.0, math.inf)}
PERSONAL = ("ditto_", "finetuned_")  # personal models' metrics: the same ranges


def check_metrics(metrics: Mapping[str, object], who: str) -> None:
    """Raise MalformedUpdate unless `metrics` follows the rules above."""
    if len(metrics) > MAX_METRICS:
        raise MalformedUpdate(f"{who}: {len(metrics)} metrics, more than {MAX_METRICS}")
    for name, value in metrics.items():
        if not isinstance(name, str) or METRIC_NAME.fullmatch(name) is None:
            raise MalformedUpdate(f"{who}: a metric name is not 1-64 characters of "
                                  f"[A-Za-z0-9_.:-]")
        try:
            x = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise MalformedUpdate(f"{who}: metric '{name}' is not a number") from None
        if not math.isfinite(x):
            raise MalformedUpdate(f"{who}: metric '{name}' is not a finite number")
        low, high = RANGES.get(_base(name), (-math.inf, math.inf))
        if not low <= x <= high:
            raise MalformedUpdate(f"{who}: metric '{name}' is outside [{low}, {high}]")


def _base(name: str) -> str:
    for prefix in PERSONAL:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


@dataclass(frozen=True)
class Admission:
    """The rows each institution reported at the prepare stage (empty: no bound on counts,
    as in a Python-API run without one), and why those refused there were refused."""

    train_rows: Mapping[str, int] = field(default_factory=dict)
    test_rows: Mapping[str, int] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    def check_fit(self, reply: Reply, aggregator: Layer) -> None:
        """A fit reply's metrics, example count and aggregation weight.

        Raises:
            MalformedUpdate: the first rule it breaks.
        """
        who = f"reply from '{reply.client_id}'"
        self._admitted(reply.client_id, who)
        check_metrics(reply.metrics, who)
        n = _count(reply, self.train_rows, "training", who)
        mean = find_mean(aggregator)
        if mean is None or reply.update is None or find_staged(aggregator) is not None:
            return  # no weight, or a secure sum hides it
        if not mean.carries_weight_of(reply.update, n):
            raise MalformedUpdate(f"{who}: its aggregation weight is not the one its example "
                                  f"count gives")

    def check_evaluation(self, reply: Reply) -> None:
        """An evaluation reply's metrics and example count.

        Raises:
            MalformedUpdate: the first rule it breaks.
        """
        who = f"evaluation from '{reply.client_id}'"
        self._admitted(reply.client_id, who)
        check_metrics(reply.metrics, who)
        _count(reply, self.test_rows, "test", who)

    def _admitted(self, client: str, who: str) -> None:
        if client in self.refused:
            raise ProtocolError(f"{who}: its statistics were refused at the prepare stage "
                                f"({self.refused[client]})")

    def expected_total(self, aggregator: Layer, counts: list[int]) -> float | None:
        """The total weight the contributions with `counts` examples must add up to (None:
        the stack has no weighted mean)."""
        mean = find_mean(aggregator)
        return None if mean is None else math.fsum(mean.weight(n) for n in counts)


def _count(reply: Reply, rows: Mapping[str, int], kind: str, who: str) -> int:
    n = reply.num_examples
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise MalformedUpdate(f"{who}: its number of {kind} examples is not a positive count")
    n = int(n)
    if not rows:
        return n
    bound = rows.get(reply.client_id)
    if bound is None:
        bound = max(rows.values())
        if n > bound:
            raise MalformedUpdate(f"{who}: claims more {kind} examples than the {bound} of "
                                  f"any institution at the prepare stage, where it took no part")
    elif n > bound:
        raise MalformedUpdate(f"{who}: claims more {kind} examples than the {bound} {kind} "
                              f"rows it reported at the prepare stage")
    return n
