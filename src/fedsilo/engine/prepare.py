"""The prepare stage: federated preprocessing before round 1.

Every available institution splits its table and returns aggregates of its training split; the
server merges them in a fixed (name) order and fits the preprocessing the whole run uses.
Raw rows never travel. Same code over the in-process and the gRPC transports. An institution
that finds its own data (or its task) unusable answers with a data or config error, and the run
stops there, before training, with that institution's reason. Statistics that could not come
from real rows (data/plausible.py) are refused, with the reason: that institution takes no
part in the run, and every round records why. The training and test rows each institution
reported bound the example counts it may claim later (algorithms/admission.py).

With `config["secure"]` (secure aggregation on, engine/secure_prepare.py) the statistics go
through the run's secure sum instead: the server learns each institution's row counts and
only the sums of everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fedsilo.algorithms.admission import Admission
from fedsilo.core.messages import Rejection, Reply, Task, TaskKind
from fedsilo.core.transport import ServerTransport
from fedsilo.data.plausible import DEFAULT_MAX_LEVELS, check_statistics, plausible_test_rows
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor, merge_all
from fedsilo.data.schema import Schema
from fedsilo.errors import AggregationError, ConfigError, DataError, FedsiloError

log = logging.getLogger(__name__)
# what an institution may answer a prepare task with that stops the run before training
FATAL: dict[str, type[FedsiloError]] = {DataError.code: DataError, ConfigError.code: ConfigError}


def prepare_config(schema: Schema, read: Mapping[str, Any], test_fraction: float,
                   seed: int) -> dict[str, Any]:
    """What an institution needs to read, split and summarise its table (JSON-able)."""
    return {"schema": schema.to_dict(), "read": dict(read),
            "split": {"test_fraction": test_fraction, "seed": seed}}


def federated_preprocessing(transport: ServerTransport, config: Mapping[str, Any],
                            run_id: str, min_institutions: int = 1,
                            timeout: float | None = None,
                            classes: tuple[str, ...] | None = None,
                            max_levels: int = DEFAULT_MAX_LEVELS,
                            keys: Mapping[str, bytes] | None = None,
                            ) -> tuple[Preprocessor, Admission]:
    """Preprocessing fitted on the merged statistics of the institutions that answered.

    Returns:
        The preprocessor, and what the rounds admit: each contributing institution's
        training and test rows, and the institutions whose statistics were refused (why).
    Raises:
        DataError, ConfigError: an institution found its own data or its task unusable
            (its reason, which names it; training never starts on part of the consortium
            because one member's data is broken).
        AggregationError: fewer than `min_institutions` answered with valid statistics.
    """
    if config.get("secure"):
        from fedsilo.engine.secure_prepare import secure_preprocessing

        return secure_preprocessing(transport, config, run_id, min_institutions, timeout,
                                    classes, max_levels, keys)
    schema = Schema.from_dict(config["schema"])
    tasks = [Task(run_id, 0, 0, TaskKind.PREPARE, c, {}, dict(config))
             for c in sorted(transport.clients())]
    transport.dispatch(tasks)
    fraction = float(config["split"]["test_fraction"])
    stats: dict[str, LocalStatistics] = {}
    tests: dict[str, int] = {}
    implausible: dict[str, str] = {}
    problems: list[str] = []
    refused: list[FedsiloError] = []
    for reply in transport.poll(timeout):
        rejection = None
        try:
            if reply.error is not None:
                raise AggregationError(str(reply.error))
            stats[reply.client_id], tests[reply.client_id] = _statistics(
                reply, schema, max_levels, fraction, implausible)
        except (FedsiloError, KeyError) as e:
            rejection = Rejection(reply.client_id, getattr(e, "code", "data_error"), str(e))
            problems.append(f"{reply.client_id}: {e}")
            stop = fatal(reply)
            if stop is not None:
                refused.append(stop)
            else:
                log.warning("prepare: no statistics from %s: %s", reply.client_id, e)
        transport.acknowledge(reply, rejection)
    stop_if_fatal(refused)
    if len(stats) < min_institutions:
        raise AggregationError(f"prepare: {len(stats)} institutions sent statistics, need "
                               f"{min_institutions}; " + ("; ".join(problems) or "none answered"))
    merged = merge_all([stats[c] for c in sorted(stats)])
    admission = Admission({c: s.rows for c, s in stats.items()}, tests, implausible)
    return Preprocessor.from_statistics(merged, schema, classes), admission


def _statistics(reply: Reply, schema: Schema, max_levels: int, fraction: float,
                implausible: dict[str, str]) -> tuple[LocalStatistics, int]:
    """An institution's statistics and test rows, checked (data/plausible.py); a refusal is
    noted in `implausible` (the rounds refuse that institution with the same reason).

    Raises:
        DataError: statistics that could not come from real rows of the declared columns.
    """
    try:
        stats = LocalStatistics.from_dict(reply.payload.get("statistics"))
        check_statistics(stats, schema, max_levels)
        most = plausible_test_rows(stats.rows, fraction)
        test = reply.payload.get("test_rows", most)
        if isinstance(test, bool) or not isinstance(test, int) or not 0 <= test <= most:
            raise DataError("statistics: more test rows than the training rows allow at "
                            "data.test_fraction")
    except DataError as e:
        implausible[reply.client_id] = str(e)
        raise
    return stats, test


def fatal(reply: Reply) -> FedsiloError | None:
    """The error that stops the run for `reply`'s data or config error (its reason, naming
    the institution), else None."""
    if reply.error is None or reply.error.code not in FATAL:
        return None
    who, reason = reply.client_id, reply.error.reason
    return FATAL[reply.error.code](reason if f"'{who}'" in reason
                                   else f"institution '{who}': {reason}")


def stop_if_fatal(errors: list[FedsiloError]) -> None:
    """Raise the institutions' data errors (else config errors) together, if any."""
    if errors:
        kind = DataError if any(isinstance(e, DataError) for e in errors) else ConfigError
        raise kind("; ".join(str(e) for e in errors))
