"""The prepare stage: federated preprocessing before round 1.

Every available institution splits its table and returns aggregates of its training split; the
server merges them in a fixed (name) order and fits the preprocessing the whole run uses.
Raw rows never travel. Same code over the in-process and the gRPC transports. An institution
that finds its own data (or its task) unusable answers with a data or config error, and the run
stops there, before training, with that institution's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fedsilo.algorithms.base import Rejection
from fedsilo.core.messages import Task, TaskKind
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor, merge_all
from fedsilo.data.schema import Schema
from fedsilo.errors import AggregationError, ConfigError, DataError, FedsiloError
from fedsilo.transport.base import ServerTransport

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
                            ) -> tuple[Preprocessor, dict[str, int]]:
    """Preprocessing fitted on the merged statistics of the institutions that answered.

    Returns:
        The preprocessor, and each contributing institution's number of training rows.
    Raises:
        DataError, ConfigError: an institution found its own data or its task unusable
            (its reason, which names it; training never starts on part of the consortium
            because one member's data is broken).
        AggregationError: fewer than `min_institutions` answered with valid statistics.
    """
    schema = Schema.from_dict(config["schema"])
    tasks = [Task(run_id, 0, 0, TaskKind.PREPARE, c, {}, dict(config))
             for c in sorted(transport.clients())]
    transport.dispatch(tasks)
    stats: dict[str, LocalStatistics] = {}
    problems: list[str] = []
    refused: list[FedsiloError] = []
    for reply in transport.poll(timeout):
        rejection = None
        try:
            if reply.error is not None:
                raise AggregationError(str(reply.error))
            stats[reply.client_id] = LocalStatistics.from_dict(reply.payload["statistics"])
        except (FedsiloError, KeyError) as e:
            rejection = Rejection(reply.client_id, getattr(e, "code", "data_error"), str(e))
            problems.append(f"{reply.client_id}: {e}")
            if reply.error is not None and reply.error.code in FATAL:
                refused.append(FATAL[reply.error.code](_naming(reply.client_id,
                                                               reply.error.reason)))
            else:
                log.warning("prepare: no statistics from %s: %s", reply.client_id, e)
        transport.acknowledge(reply, rejection)
    if refused:
        kind = DataError if any(isinstance(e, DataError) for e in refused) else ConfigError
        raise kind("; ".join(str(e) for e in refused))
    if len(stats) < min_institutions:
        raise AggregationError(f"prepare: {len(stats)} institutions sent statistics, need "
                               f"{min_institutions}; " + ("; ".join(problems) or "none answered"))
    merged = merge_all([stats[c] for c in sorted(stats)])
    rows = {c: s.rows for c, s in stats.items()}
    return Preprocessor.from_statistics(merged, schema, classes), rows


def _naming(institution: str, reason: str) -> str:
    """An institution's reason, prefixed with its name unless the reason already gives it."""
    return reason if f"'{institution}'" in reason else f"institution '{institution}': {reason}"
