"""The prepare stage: federated preprocessing before round 1.

Every available institution splits its table and returns aggregates of its training split; the
server merges them in a fixed (name) order and fits the preprocessing the whole run uses.
Raw rows never travel. Same code over the in-process and the gRPC transports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fedsilo.algorithms.base import Rejection
from fedsilo.core.messages import Task, TaskKind
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor, merge_all
from fedsilo.data.schema import Schema
from fedsilo.errors import AggregationError, FedsiloError
from fedsilo.transport.base import ServerTransport

log = logging.getLogger(__name__)


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
        AggregationError: fewer than `min_institutions` answered with valid statistics.
    """
    schema = Schema.from_dict(config["schema"])
    tasks = [Task(run_id, 0, 0, TaskKind.PREPARE, c, {}, dict(config))
             for c in sorted(transport.clients())]
    transport.dispatch(tasks)
    stats: dict[str, LocalStatistics] = {}
    problems: list[str] = []
    for reply in transport.poll(timeout):
        rejection = None
        try:
            if reply.error is not None:
                raise AggregationError(f"[{reply.error.code}] {reply.error.reason}")
            stats[reply.client_id] = LocalStatistics.from_dict(reply.payload["statistics"])
        except (FedsiloError, KeyError) as e:
            rejection = Rejection(reply.client_id, getattr(e, "code", "data_error"), str(e))
            log.warning("prepare: no statistics from %s: %s", reply.client_id, e)
            problems.append(f"{reply.client_id}: {e}")
        transport.acknowledge(reply, rejection)
    if len(stats) < min_institutions:
        raise AggregationError(f"prepare: {len(stats)} institutions sent statistics, need "
                               f"{min_institutions}; " + ("; ".join(problems) or "none answered"))
    merged = merge_all([stats[c] for c in sorted(stats)])
    rows = {c: s.rows for c, s in stats.items()}
    return Preprocessor.from_statistics(merged, schema, classes), rows
